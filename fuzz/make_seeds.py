#!/usr/bin/env python3
"""Writes the hand-made seed inputs of fuzz/corpus/<target>/seed-*.

Seeds are small valid (and a few nearly valid) inputs of each format; the fuzzers mutate them.
Inputs found by fuzzing are added next to them by fuzz/run_fuzzers.sh (corpus merge) and crashes
are committed as crash-* after the fix. Run from the repository root:
    /usr/bin/python3 fuzz/make_seeds.py
"""
import json
import os
import struct
import zlib

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def put(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)


def js(obj):
    return json.dumps(obj, indent=1)


# --- JSON, and the regressions of issue 17 ---------------------------------------------------
put("json", "object", js({"a": [1, -2, 3.5, "x\u00e9", True, None], "b": {"c": 18446744073709551615}}))
put("json", "deep", "[" * 70 + "]" * 70)
put("json", "overflow", '{"x": 1e999}')
put("json", "big_int", '{"levels": 4294967312, "seed": -1}')
put("json", "dup", '{"a": 1, "a": 2}')
put("json", "escapes", '["\\u0000\\ud83d\\ude00\\n", "\\uDEAD"]')

# --- model config.json -------------------------------------------------------------------------
gpt2 = {"model_type": "gpt2", "activation_function": "gelu_new", "n_layer": 2, "n_head": 2,
        "n_embd": 16, "n_positions": 32, "n_ctx": 32, "vocab_size": 300,
        "layer_norm_epsilon": 1e-5, "gaincell_attention": "softmax", "gaincell_window": 0}
put("model_config", "gpt2", js(gpt2))
put("model_config", "gaincell", js(dict(gpt2, gaincell_attention="gaincell-nonlinear",
                                        gaincell_window=8, gaincell_tokenizer="bytes")))
put("model_config", "huge", js(dict(gpt2, n_layer=2147483647)))
put("model_config", "negative", js(dict(gpt2, n_embd=-16, vocab_size=4294967312)))

# --- hardware config ---------------------------------------------------------------------------
hw = {"preset": "paper-nonlinear", "name": "fuzz",
      "quantization": {"q": {"levels": 16, "range": [-1, 1]}, "out_grid": "uniform"},
      "cell": {"model": "nonlinear", "vin": 0.9},
      "noise": {"seed": 7}, "window": 64}
put("hw_config", "paper", js(hw))
put("hw_config", "levels_overflow", js({"quantization": {"q": {"levels": 4294967312}}}))
put("hw_config", "seed_negative", js({"noise": {"seed": -1}}))
put("hw_config", "linear", js({"preset": "paper-linear", "k_offset": 0.45, "v_offset": 0.45}))

# --- device file -------------------------------------------------------------------------------
dev = {"format": "gaincell-device", "version": 1, "coefficients": [0.1 * i for i in range(10)],
       "vin": 0.9, "offset": 0.45, "linear_slope": 1.2, "linear_intercept": 0.0,
       "source": "fuzz seed"}
put("device_file", "valid", js(dev))
put("device_file", "version_overflow", js(dict(dev, version=4294967297)))

# --- training options (training_state.json "options") -------------------------------------------
opts = {"steps": 10, "batch_size": 2, "seq_len": 16, "grad_accum": 1, "lr": 0.01, "min_lr": 0.001,
        "warmup_steps": 2, "lr_decay_steps": 0, "weight_decay": 0.1, "beta1": 0.9, "beta2": 0.95,
        "eps": 1e-8, "grad_clip": 1.0, "eval_interval": 5, "eval_iters": 2,
        "checkpoint_interval": 0, "seed": 1337, "log_interval": 1, "data_dir": "tok"}
put("train_options", "valid", js(opts))
put("train_options", "seed_negative", js(dict(opts, seed=-1, batch_size=4294967298)))

# --- cost configuration ------------------------------------------------------------------------
put("cost_config", "preset", js({"preset": "paper", "name": "fuzz",
                                 "energy_per_op_j": {"value": 1e-15, "unit": "J", "source": "x"}}))
put("cost_config", "number", js({"preset": "paper", "clock_hz": 1e9}))

# --- .npy / .npz -------------------------------------------------------------------------------
def npy(descr, shape, payload):
    header = "{'descr': '%s', 'fortran_order': False, 'shape': %s, }" % (
        descr, "(" + "".join("%d," % s for s in shape) + ")" if shape else "()")
    pad = 64 - (10 + len(header) + 1) % 64
    header = header + " " * pad + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + payload


a = npy("<f4", [2, 3], struct.pack("<6f", *range(6)))
put("npy", "f4", a)
put("npy", "i8", npy("<i8", [3], struct.pack("<3q", -1, 0, 1)))
put("npy", "scalar", npy("<f8", [], struct.pack("<d", 2.5)))


def npz(members):
    out, central = b"", b""
    for name, data in members:
        crc = zlib.crc32(data) & 0xFFFFFFFF
        local = struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 0, 0, 0, crc, len(data), len(data),
                            len(name), 0) + name.encode()
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 0, 0, 0, crc,
                               len(data), len(data), len(name), 0, 0, 0, 0, 0,
                               len(out)) + name.encode()
        out += local + data
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(members), len(members), len(central),
                      len(out), 0)
    return out + central + end


put("npz", "two", npz([("a.npy", a), ("b.npy", npy("<i8", [3], struct.pack("<3q", 1, 2, 3)))]))

# --- safetensors -------------------------------------------------------------------------------
def safetensors(tensors, metadata=None):
    header, data = {}, b""
    if metadata:
        header["__metadata__"] = metadata
    for name, dtype, shape, payload in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(payload)]}
        data += payload
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data


put("safetensors", "f32", safetensors([("w", "F32", [2, 2], struct.pack("<4f", 1, 2, 3, 4))],
                                      {"format": "pt"}))
put("safetensors", "mixed", safetensors([("a", "F16", [2], b"\x00\x3c\x00\xc0"),
                                         ("b", "BF16", [1], b"\x80\x3f"),
                                         ("c", "F32", [0], b"")]))
put("safetensors", "overlap", safetensors([("w", "F32", [1], struct.pack("<f", 1))])[:-2])

# --- I-V table CSV -----------------------------------------------------------------------------
rows = ["# gain-cell I-V table (fuzz seed)", "vstore_v,vin=0.450000,vin=0.900000"]
for i, v in enumerate([0.0, 0.3, 0.6, 0.9]):
    rows.append("%.6f,%.6e,%.6e" % (v, 1e-7 * i, 2e-7 * i))
put("iv_csv", "table", "\n".join(rows) + "\n")
put("iv_csv", "ragged", "vstore_v,vin=0.45,vin=0.9\n0,1e-7\n0.5,nan,1\n")

# --- token files (uint16 little endian) --------------------------------------------------------
put("token_file", "small", struct.pack("<12H", *[1, 2, 3, 50256, 0, 7, 8, 9, 10, 11, 12, 13]))
put("token_file", "out_of_range", struct.pack("<4H", 1, 2, 65535, 3))
put("token_file", "odd", b"\x01\x00\x02")

# --- tokenizer ---------------------------------------------------------------------------------
put("tokenizer_encode", "english", "Hello world! It's 2025 -- isn't it?\n\n  <|endoftext|>")
put("tokenizer_encode", "unicode", "na\u00efve caf\u00e9 \u65e5\u672c\u8a9e \U0001F600 \u0301")
put("tokenizer_encode", "invalid_utf8", b"\xff\xfe\xc3\x28 abc \xe2\x82")
put("tokenizer_decode", "ids", struct.pack("<6i", 15496, 995, 0, 50256, 256, 220))
put("tokenizer_decode", "bad_ids", struct.pack("<3i", -1, 50257, 2147483647))

# --- sweep file (docs/sweeps.md) ----------------------------------------------------------------
put("sweep_file", "grid", js({"name": "levels", "base": "paper-nonlinear",
                              "axes": {"quantization.k.levels": [4, 8, 16], "array_size": [32, 64]},
                              "evaluation": {"type": "perplexity", "tokens": "val.bin",
                                             "limit": 256, "context": 32, "stride": 16},
                              "prepare": {"adapt": "from-model", "batch": 2, "seq_len": 16,
                                          "finetune_steps": 1, "finetune_lr": 1e-4},
                              "seeds": 2, "cost": {"preset": "paper", "tokens": 64, "batch": 1},
                              "objective": "ppl"}))
put("sweep_file", "list", js({"base": {"array_size": 64, "noise": {"seed": 3}},
                              "points": [{"noise.gain_variation": 0.1},
                                         {"noise.gain_variation": 0.2, "array_size": 32}],
                              "evaluation": {"type": "tasks", "tasks": ["piqa"], "limit": 4}}))
put("sweep_file", "bad", '{"axes": {"cell.coefficients.9": [1], "noise.seed": [4294967297]}, '
                         '"seeds": 4294967297, "prepare": {"finetune_lr": 1e300}}')
put("sweep_file", "huge_grid", js({"axes": {"array_size": list(range(16, 116)),
                                            "quantization.k.levels": list(range(2, 102)),
                                            "quantization.q.levels": list(range(2, 102))}}))

# --- evaluation data: the first byte picks the reader (fuzz/targets.cpp fuzz_eval_data) --------
EVAL = os.path.join(os.path.dirname(ROOT), "..", "tests", "fixtures", "eval")


def fixture(name, lines=3):
    with open(os.path.join(EVAL, name), "rb") as f:
        return b"".join(f.read().splitlines(keepends=True)[:lines])


put("eval_data", "wikitext_jsonl", b"\x00" + fixture("wikitext_test.jsonl", 2))
put("eval_data", "wikitext_raw", b"\x01" + fixture("wiki.test.raw", 12))
put("eval_data", "lambada", b"\x02" + fixture("lambada_openai_test.jsonl"))
put("eval_data", "hellaswag", b"\x03" + fixture("hellaswag_validation.jsonl", 2))
put("eval_data", "hellaswag_original", b"\x03" + fixture("hellaswag_val.jsonl", 2))
put("eval_data", "piqa", b"\x04" + fixture("piqa_validation.jsonl"))
put("eval_data", "piqa_labels_file",
    b"\x04" + b'{"goal": "g", "sol1": "a", "sol2": "b"}\n{"goal": "h", "sol1": "c", "sol2": "d"}\n'
    + b"\x00" + b"1\n0\n")
put("eval_data", "arc", b"\x05" + fixture("arc_easy_test.jsonl"))
put("eval_data", "arc_original", b"\x05" + fixture("ARC-Challenge-Test.jsonl"))
put("eval_data", "winogrande", b"\x06" + fixture("winogrande_validation.jsonl"))
put("eval_data", "tokens_json", b"\x07" + b'{"ids": [15496, 995, 0, 50256]}')
put("eval_data", "tokens_uint16", b"\x07" + struct.pack("<4H", 15496, 995, 0, 50256))
put("eval_data", "tokens_uint32", b"\x08" + struct.pack("<3I", 15496, 50256, 70000))
put("eval_data", "bad_label", b"\x03" + b'{"activity_label": "a", "ctx_a": "b", "ctx_b": "c", '
    b'"endings": ["d", "e"], "label": 9223372036854775808}\n')

# --- Hugging Face tokenizer.json (tokenizer_config.json after a NUL byte) ----------------------
sp_vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
for b in range(256):
    sp_vocab["<0x%02X>" % b] = 3 + b
sp_vocab.update({"\u2581": 259, "a": 260, "b": 261, "\u2581a": 262, "ab": 263, "\u2581ab": 264})
sentencepiece = {
    "model": {"type": "BPE", "vocab": sp_vocab, "unk_token": "<unk>", "byte_fallback": True,
              "fuse_unk": True, "merges": ["\u2581 a", "a b", "\u2581a b"]},
    "normalizer": {"type": "Sequence", "normalizers": [
        {"type": "Prepend", "prepend": "\u2581"},
        {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]},
    "pre_tokenizer": None,
    "decoder": {"type": "Sequence", "decoders": [
        {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
        {"type": "ByteFallback"}, {"type": "Fuse"},
        {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
    "post_processor": {"type": "TemplateProcessing",
                       "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                                  {"Sequence": {"id": "A", "type_id": 0}}],
                       "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
    "added_tokens": [{"id": 1, "content": "<s>", "special": True},
                     {"id": 2, "content": "</s>", "special": True}]}
put("tokenizer_json", "sentencepiece", json.dumps(sentencepiece))
put("tokenizer_json", "sentencepiece_config",
    json.dumps(sentencepiece).encode() + b"\x00" +
    json.dumps({"bos_token": "<s>", "eos_token": {"content": "</s>"}, "add_bos_token": True}).encode())
# Byte-level BPE with a PCRE2 split (GPT-2's pattern) and a few merges.
byte_chars = [chr(c) for c in range(33, 127)] + [chr(c) for c in range(161, 173)] + \
             [chr(c) for c in range(174, 256)]
extra = [chr(256 + i) for i in range(256 - len(byte_chars))]
bl_vocab = {ch: i for i, ch in enumerate(byte_chars + extra)}
bl_vocab.update({"\u0120t": 256, "he": 257, "\u0120the": 258, "<|endoftext|>": 259})
byte_level = {
    "model": {"type": "BPE", "vocab": bl_vocab, "merges": ["\u0120 t", "h e", "\u0120t he"]},
    "normalizer": {"type": "NFC"},
    "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex":
            "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"},
         "behavior": "Isolated", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "use_regex": False}]},
    "decoder": {"type": "ByteLevel"},
    "post_processor": {"type": "ByteLevel"},
    "added_tokens": [{"id": 259, "content": "<|endoftext|>", "special": True}]}
put("tokenizer_json", "byte_level", json.dumps(byte_level))
put("tokenizer_json", "deep", '{"model": ' + "[" * 100 + "]" * 100 + "}")

# --- the command line (arguments separated by newlines) ----------------------------------------
for name, args in {
    "train": ["train", "--data", "tok", "--config", "c.json", "--out", "o", "--steps", "10",
              "--lr", "1e-3", "--batch-size", "2", "--seq-len", "16"],
    "resume": ["--threads", "2", "train", "--resume", "o"],
    "sweep": ["sweep", "--model", "m", "--spec", "s.json", "--out", "o", "--jobs", "2",
              "--resume", "--limit", "64"],
    "eval": ["eval", "--model", "m", "--tasks", "piqa,arc_easy", "--limit", "4", "--data-dir",
             "d", "--json"],
    "pipeline": ["pipeline", "--init", "i", "--data", "d", "--out", "o", "--steps-a", "2",
                 "--stop-after", "A"],
    "hw": ["hw", "show", "--hw", "paper-linear"],
    "generate": ["generate", "--model", "m", "--prompt", "Hi", "--max-tokens", "4",
                 "--temperature", "0.7", "--seed", "-1"],
    "cost": ["cost", "--hw", "paper-nonlinear", "--json"],
    "threads_huge": ["--threads", "2147483647", "cost"],
    "help": ["perplexity", "--help"],
    "unknown": ["frobnicate", "--x"],
    # Command lines whose checks open files (validate_without_running; paths from the checkout).
    "train_config_file": ["train", "--data", "d", "--out", "o", "--config",
                          "tests/fixtures/gpt2_tiny/config.json", "--steps", "2"],
    "train_hw_file": ["train", "--data", "d", "--out", "o", "--config", "tiny", "--attention",
                      "gaincell-nonlinear", "--hw", "fuzz/corpus/hw_config/seed-linear"],
    "train_huge": ["train", "--data", "d", "--out", "o", "--config", "gpt2-xl", "--batch-size",
                   "4096", "--seq-len", "1024"],
    "train_bad_options": ["train", "--data", "d", "--out", "o", "--config", "tiny", "--lr", "-1",
                          "--min-lr", "nan"],
    "resume_not_a_checkpoint": ["train", "--resume", "tests/fixtures/gpt2_tiny"],
    "sweep_list": ["sweep", "--list", "--spec", "examples/sweeps/paper-bits.json"],
    "sweep_grid": ["sweep", "--model", "m", "--point", "1", "--spec",
                   "fuzz/corpus/sweep_file/seed-grid"],
    "cost_files": ["cost", "--hw", "fuzz/corpus/hw_config/seed-paper", "--preset",
                   "fuzz/corpus/cost_config/seed-preset", "--model", "tests/fixtures/gpt2_tiny",
                   "--serving", "--batches", "1,8", "--precision", "bf16"],
    "hw_file": ["hw", "show", "--hw", "fuzz/corpus/hw_config/seed-levels_overflow"],
}.items():
    put("cli_args", name, "\n".join(args))
