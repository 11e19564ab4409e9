"""gaincell.Model: the library's model API against the CLI on the same model directory."""
import json
import os
import shutil

import numpy as np
import pytest

import gaincell
from conftest import FIXTURES, run_cli

TEXT = ("The gain-cell arrays hold the keys and values as voltages; leakage slowly forgets "
        "them. Attention in memory saves the energy of moving the cache.\n") * 3


@pytest.fixture(scope="module")
def byte_model_dir(tmp_path_factory):
    """A small random byte-level model written by the library (config.json + safetensors)."""
    path = tmp_path_factory.mktemp("model")
    cfg = {"n_layer": 2, "n_head": 2, "n_embd": 32, "n_positions": 64, "vocab_size": 257,
           "gaincell_tokenizer": "bytes", "gaincell_attention": "gaincell-nonlinear"}
    m = gaincell.Model.from_config(cfg, seed=5)
    m.save(str(path))
    return path


def test_load_and_config(byte_model_dir):
    m = gaincell.Model.load(str(byte_model_dir))
    assert m.attention == "gaincell-nonlinear"
    assert m.config["n_layer"] == 2 and m.vocab_size == 257 and m.block_size == 64
    assert m.hw == gaincell.HwConfig("paper-nonlinear")
    assert m.encode("AB") == [65, 66] and m.decode([72, 105]) == "Hi"
    soft = gaincell.Model.load(str(byte_model_dir), attention="softmax")
    assert soft.attention == "softmax"
    p = m.params()
    assert p["h.0.attn.q_scaler.a"].shape == (2,)
    assert p["wte.weight"].shape == (257, 32)


@pytest.mark.parametrize("attention", ["gaincell-nonlinear", "softmax"])
def test_per_token_nll_equals_cli_perplexity(byte_model_dir, tmp_path, attention):
    text_file = tmp_path / "text.txt"
    text_file.write_text(TEXT)
    cli = json.loads(run_cli("perplexity", "--model", byte_model_dir, "--text", text_file,
                             "--per-token", "--context", 48, "--stride", 32,
                             "--attention", attention).stdout)
    m = gaincell.Model.load(str(byte_model_dir), attention=attention)
    r = m.perplexity(TEXT, context=48, stride=32)
    assert r["tokens"] == cli["tokens"] == len(TEXT.encode())
    assert r["windows"] == cli["windows"]
    np.testing.assert_array_equal(r["nll"], np.asarray(cli["nll"], dtype=np.float32))
    assert r["ppl"] == pytest.approx(cli["ppl"], rel=1e-12)
    # log_likelihoods of explicit ids (the CLI prepends <|endoftext|>, id 256 for bytes).
    ids = [m.end_of_text] + m.encode(TEXT)
    ll = m.log_likelihoods(ids, context=48, stride=32)
    np.testing.assert_allclose(ll, -np.asarray(cli["nll"]), rtol=0, atol=0)


def test_logits_agree_with_log_likelihoods(byte_model_dir):
    m = gaincell.Model.load(str(byte_model_dir))
    ids = np.array(m.encode(TEXT[:40]))
    logits = m.logits(ids).astype(np.float64)
    assert logits.shape == (40, 257)
    logp = logits - np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1, keepdims=True)) \
        - logits.max(1, keepdims=True)
    want = logp[np.arange(39), ids[1:]]
    np.testing.assert_allclose(m.log_likelihoods(ids), want, rtol=0, atol=2e-5)
    batch = m.logits(np.stack([ids, ids]))
    assert batch.shape == (2, 40, 257)
    np.testing.assert_array_equal(batch[1], batch[0])


def test_generate_equals_cli(byte_model_dir):
    cli = json.loads(run_cli("generate", "--model", byte_model_dir, "--prompt", "The gain",
                             "--max-new-tokens", 12, "--temperature", 0.8, "--seed", 3,
                             "--json").stdout)
    m = gaincell.Model.load(str(byte_model_dir))
    r = m.generate("The gain", max_new_tokens=12, temperature=0.8, seed=3)
    assert r["tokens"] == cli["tokens"]
    assert r["completion"] == cli["completion"]
    assert len(r["prompt_tokens"]) == cli["prompt_tokens"]


def test_generate_with_a_bf16_kv_cache_equals_cli(byte_model_dir):
    # The fixture's model runs gain-cell attention, which has no KV cache: softmax instead.
    cli = json.loads(run_cli("generate", "--model", byte_model_dir, "--prompt", "The gain",
                             "--max-new-tokens", 12, "--temperature", 0.8, "--seed", 3,
                             "--attention", "softmax", "--kv-cache", "bf16", "--json").stdout)
    assert cli["kv_cache"] == "bf16"
    m = gaincell.Model.load(str(byte_model_dir), attention="softmax")
    r = m.generate("The gain", max_new_tokens=12, temperature=0.8, seed=3, kv_cache="bf16")
    assert r["tokens"] == cli["tokens"]
    with pytest.raises(Exception, match="KV cache format"):
        m.generate("The gain", max_new_tokens=2, kv_cache="q8")
    with pytest.raises(Exception, match="no KV cache"):
        gaincell.Model.load(str(byte_model_dir)).generate("The gain", kv_cache="bf16")


def test_cost_equals_cli(byte_model_dir):
    cli = json.loads(run_cli("cost", "--model", byte_model_dir, "--json").stdout)
    r = gaincell.Model.load(str(byte_model_dir)).cost()
    for key in ("energy_per_token_per_head_j", "latency_per_token_s", "area_per_head_mm2"):
        a = find_key(r, key)
        assert a is not None and a == pytest.approx(find_key(cli, key), rel=1e-12), key
    m = gaincell.Model.load(str(byte_model_dir))
    m.generate("A", max_new_tokens=5, temperature=0)
    traced = m.cost(use_trace=True)
    assert json.dumps(traced) != json.dumps(r)  # the activity-based estimate joins


def find_key(obj, key):
    if isinstance(obj, dict):
        if key in obj:
            return obj[key]
        for v in obj.values():
            found = find_key(v, key)
            if found is not None:
                return found
    elif isinstance(obj, list):
        for v in obj:
            found = find_key(v, key)
            if found is not None:
                return found
    return None


def test_bad_input_raises(byte_model_dir, tmp_path):
    m = gaincell.Model.load(str(byte_model_dir))
    with pytest.raises(ValueError, match="outside the vocabulary"):
        m.logits([1, 2, 999])
    with pytest.raises(ValueError, match="1-D"):
        m.logits(np.zeros((1, 2, 3), np.int64))
    with pytest.raises(TypeError, match="integers"):
        m.logits(np.zeros(4, np.float32))
    with pytest.raises(ValueError, match="n_positions"):
        m.logits(np.zeros(65, np.int64))
    with pytest.raises(ValueError, match="shape of inputs"):
        m.loss_and_grads([[1, 2, 3]], [[2, 3]])
    with pytest.raises(gaincell.Error):
        m.generate("x", temperature=-1)
    with pytest.raises(gaincell.Error):
        gaincell.Model.load(str(tmp_path / "missing"))
    with pytest.raises(gaincell.Error, match="neither a preset"):
        gaincell.Model.load(str(byte_model_dir), hw="nope")
    with pytest.raises(gaincell.Error, match="needs a generate"):
        m.cost(use_trace=True)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")
    with pytest.raises(gaincell.Error):
        gaincell.Model.load(str(tmp_path / "broken"))


# ----------------------------------------------------------------- a model with a tokenizer.json

LLAMA2_TOKENIZER = FIXTURES.parent.parent / "data" / "tokenizers" / "llama2"
LLAMA_TEXT = "Once upon a time, 42 llamas read   the gain-cell arrays. \u00e9t\u00e9 \u4f60\u597d\n" * 4


@pytest.fixture(scope="module")
def llama_tokenizer_model_dir(tmp_path_factory):
    """A random Llama-family model directory holding the npm Llama 2 tokenizer files (vocabulary
    32000), as a Hugging Face checkpoint has them."""
    if not (LLAMA2_TOKENIZER / "tokenizer.json").exists():
        if os.environ.get("CI") == "true":
            pytest.fail("data/tokenizers/llama2 missing in CI")
        pytest.skip("data/tokenizers/llama2 not found (run scripts/setup.sh)")
    path = tmp_path_factory.mktemp("llama_tok")
    cfg = gaincell.Model.from_config("llama-tiny").config
    cfg.update(vocab_size=32000, max_position_embeddings=128)
    gaincell.Model.from_config(cfg, seed=2).save(str(path))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(LLAMA2_TOKENIZER / name, path / name)
    return path


def test_model_directory_tokenizer_json_is_used(llama_tokenizer_model_dir, tmp_path):
    d = llama_tokenizer_model_dir
    m = gaincell.Model.load(str(d))
    cli = json.loads(run_cli("tokenize", "--json", "--model", d, "--string", LLAMA_TEXT).stdout)
    assert m.encode(LLAMA_TEXT) == cli["ids"]
    assert max(cli["ids"]) > 256  # not bytes, and (ids < 32000) not GPT-2's 50257
    assert m.decode(cli["ids"]) == LLAMA_TEXT
    assert m.end_of_text == 2  # Llama 2's </s>
    # save() carries the tokenizer files along, as the CLI's train --init and adapt do.
    m.save(str(tmp_path / "saved"))
    assert gaincell.Model.load(str(tmp_path / "saved")).encode(LLAMA_TEXT) == cli["ids"]
    # Scoring and generation tokenize as the CLI does (BOS first for Llama 2).
    text_file = tmp_path / "text.txt"
    text_file.write_text(LLAMA_TEXT)
    ppl = json.loads(run_cli("perplexity", "--model", d, "--text", text_file,
                             "--per-token").stdout)
    r = m.perplexity(LLAMA_TEXT)
    assert r["tokens"] == ppl["tokens"] == len(cli["ids"])
    np.testing.assert_array_equal(r["nll"], np.asarray(ppl["nll"], dtype=np.float32))
    gen = json.loads(run_cli("generate", "--model", d, "--prompt", "Once upon",
                             "--max-new-tokens", 8, "--temperature", 0, "--no-stop",
                             "--json").stdout)
    g = m.generate("Once upon", max_new_tokens=8, temperature=0, stop_at_eot=False)
    assert g["tokens"] == gen["tokens"]
    assert len(g["prompt_tokens"]) == gen["prompt_tokens"]
    assert g["prompt_tokens"][0] == 1  # <s>
