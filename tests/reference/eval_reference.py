#!/usr/bin/python3
"""Independent PyTorch reference of gaincell's evaluation harness (issue 10 acceptance).

Run with Debian's torch (fixture generation only; the tests never run Python):
    /usr/bin/python3 tests/reference/eval_reference.py
It rewrites (deterministically, seed 4321):

  tests/fixtures/eval_tiny/config.json, model.safetensors
      a tiny GPT-2 on the real GPT-2 vocabulary (50257 tokens, so the BPE rules matter):
      2 layers, 2 heads, n_embd 8, n_positions 64 (so long requests are left-truncated and
      WikiText pages need several rolling windows); random weights stored as F16 (small file).
  tests/fixtures/eval_reference.json
      per case (task, data file, limit): every request in lm-eval's order of construction as
      [doc, request index, context tokens, continuation tokens, log-likelihood, is_greedy],
      and the task's metrics [value, stderr or null].

Everything here is written from lm-evaluation-harness's rules (docs/evaluation.md): the task
templates, _encode_pair (trailing whitespace moved, whole minus context), the prefix token for an
empty context, get_rolling_token_windows(context_len=1) + make_disjoint_window, left truncation to
n_positions + 1, log_softmax, acc_norm by characters, mean_stderr and the bootstrap stderr of
perplexity with random.Random(i).choices. Each request is scored on its own in float64 (no
batching, no shared context), so the C++ batching and decode-state reuse are checked against it.
"""
import json
import math
import os
import random
import re
import struct
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)
from gpt2_bpe_reference import Gpt2Bpe  # noqa: E402

torch.manual_seed(4321)
torch.set_default_dtype(torch.float64)
N_LAYER, N_HEAD, N_EMBD, BLOCK, VOCAB = 2, 2, 8, 64, 50257
EOT = 50256
EPS = 1e-5
BOOTSTRAP_ITERS = 100000
MODEL_DIR = os.path.join(ROOT, "tests", "fixtures", "eval_tiny")
SHARED = os.path.normpath(os.path.join(ROOT, "..", "shared", "data", "eval"))
FIX = os.path.join(ROOT, "tests", "fixtures", "eval")

# ----------------------------------------------------------------------------------------------
# Model


def make_params():
    C = N_EMBD
    p = {}

    def rnd(name, shape, std):
        p[name] = torch.randn(*shape) * std

    rnd("wte.weight", (VOCAB, C), 0.6)
    rnd("wpe.weight", (BLOCK, C), 0.3)
    for l in range(N_LAYER):
        h = f"h.{l}."
        p[h + "ln_1.weight"] = 1.0 + 0.2 * torch.randn(C)
        rnd(h + "ln_1.bias", (C,), 0.1)
        rnd(h + "attn.c_attn.weight", (C, 3 * C), 0.5)
        rnd(h + "attn.c_attn.bias", (3 * C,), 0.1)
        rnd(h + "attn.c_proj.weight", (C, C), 0.3)
        rnd(h + "attn.c_proj.bias", (C,), 0.1)
        p[h + "ln_2.weight"] = 1.0 + 0.2 * torch.randn(C)
        rnd(h + "ln_2.bias", (C,), 0.1)
        rnd(h + "mlp.c_fc.weight", (C, 4 * C), 0.3)
        rnd(h + "mlp.c_fc.bias", (4 * C,), 0.1)
        rnd(h + "mlp.c_proj.weight", (4 * C, C), 0.2)
        rnd(h + "mlp.c_proj.bias", (C,), 0.1)
    p["ln_f.weight"] = 1.0 + 0.2 * torch.randn(C)
    rnd("ln_f.bias", (C,), 0.1)
    # Stored as F16: the engine sees exactly these values.
    return {k: v.half().double() for k, v in p.items()}


def layernorm(x, w, b):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + EPS) * w + b


def gelu_tanh(x):
    return 0.5 * x * (1.0 + torch.tanh(((2.0 / math.pi) ** 0.5) * (x + 0.044715 * x ** 3)))


def logits_of(p, tokens):
    T = len(tokens)
    idx = torch.tensor(tokens)
    x = p["wte.weight"][idx] + p["wpe.weight"][:T]
    D = N_EMBD // N_HEAD
    causal = torch.tril(torch.ones(T, T, dtype=torch.bool))
    for l in range(N_LAYER):
        h = f"h.{l}."
        a = layernorm(x, p[h + "ln_1.weight"], p[h + "ln_1.bias"])
        q, k, v = (a @ p[h + "attn.c_attn.weight"] + p[h + "attn.c_attn.bias"]).split(N_EMBD, dim=1)
        q, k, v = (t.view(T, N_HEAD, D).transpose(0, 1) for t in (q, k, v))
        s = (q @ k.transpose(-2, -1)) / math.sqrt(D)
        y = torch.softmax(s.masked_fill(~causal, float("-inf")), dim=-1) @ v
        x = x + y.transpose(0, 1).reshape(T, N_EMBD) @ p[h + "attn.c_proj.weight"] + p[h + "attn.c_proj.bias"]
        m = layernorm(x, p[h + "ln_2.weight"], p[h + "ln_2.bias"])
        x = x + gelu_tanh(m @ p[h + "mlp.c_fc.weight"] + p[h + "mlp.c_fc.bias"]) @ p[h + "mlp.c_proj.weight"] + p[h + "mlp.c_proj.bias"]
    return layernorm(x, p["ln_f.weight"], p["ln_f.bias"]) @ p["wte.weight"].T


def write_model(p):
    os.makedirs(MODEL_DIR, exist_ok=True)
    header, blobs, offset = {"__metadata__": {"format": "pt"}}, [], 0
    for name, t in p.items():
        data = t.half().contiguous().numpy().tobytes()
        header[name] = {"dtype": "F16", "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * ((8 - len(head) % 8) % 8)
    with open(os.path.join(MODEL_DIR, "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(head)))
        f.write(head)
        for b in blobs:
            f.write(b)
    config = {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "activation_function": "gelu_new",
              "n_layer": N_LAYER, "n_head": N_HEAD, "n_embd": N_EMBD, "n_positions": BLOCK, "n_ctx": BLOCK,
              "vocab_size": VOCAB, "layer_norm_epsilon": EPS, "gaincell_attention": "softmax"}
    with open(os.path.join(MODEL_DIR, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")


# ----------------------------------------------------------------------------------------------
# Tasks (lm_eval/tasks/*: templates and preprocessing)


def wikitext_detokenizer(string):
    string = string.replace("s '", "s'")
    string = re.sub(r"/' [0-9]/", r"/'[0-9]/", string)
    string = string.replace(" @-@ ", "-").replace(" @,@ ", ",").replace(" @.@ ", ".")
    for p in [":", ";", ".", "!", "?", ","]:
        string = string.replace(f" {p} ", f"{p} ")
    string = re.sub(r"\(\s*([^\)]*?)\s*\)", r"(\1)", string)
    string = re.sub(r"\[\s*([^\]]*?)\s*\]", r"[\1]", string)
    string = re.sub(r"{\s*([^}]*?)\s*}", r"{\1}", string)
    string = re.sub(r"\"\s*([^\"]*?)\s*\"", r'"\1"', string)
    string = re.sub(r"'\s*([^']*?)\s*'", r"'\1'", string)
    string = string.replace("= = = =", "====").replace("= = =", "===").replace("= =", "==")
    string = string.replace(" " + chr(176) + " ", chr(176))
    string = string.replace(" \n", "\n").replace("\n ", "\n")
    string = string.replace(" N ", " 1 ").replace(" 's", "'s")
    return string


def wikitext_split(raw):
    pages, ret = [], []
    for line in raw.split("\n"):
        rline = line.replace("= = =", "===").replace("= =", "==").strip()
        if rline.startswith("= ") and rline.strip().endswith(" ="):
            page = "\n".join(ret)
            if page.strip():
                pages.append(page)
            ret = []
        ret.append(line)
    pages.append("\n".join(ret))
    return pages


def hellaswag_preprocess(text):
    text = text.strip()
    text = text.replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    return text.replace("  ", " ")


def read_rows(path, limit):
    with open(path, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return rows[:limit] if limit else rows


def docs_of(task, path, limit):
    """[(requests [(context, continuation)], choices, gold, words, bytes)] per document."""
    docs = []
    if task == "wikitext":
        if path.endswith(".raw"):
            with open(path, encoding="utf-8") as f:
                pages = wikitext_split(f.read())
            pages = pages[:limit] if limit else pages
        else:
            pages = [r["page"] for r in read_rows(path, limit)]
        for page in pages:
            docs.append(([("", wikitext_detokenizer(page))], None, None,
                         len(re.split(r"\s+", page)), len(page.encode("utf-8"))))
    elif task == "lambada_openai":
        for r in read_rows(path, limit):
            words = r["text"].split(" ")
            docs.append(([(" ".join(words[:-1]), " " + words[-1])], None, None, 0, 0))
    elif task == "hellaswag":
        for r in read_rows(path, limit):
            query = hellaswag_preprocess(r["activity_label"] + ": " + r["ctx_a"] + " " + r["ctx_b"].capitalize())
            choices = [hellaswag_preprocess(e) for e in r["endings"]]
            docs.append(([(query, " " + c) for c in choices], choices, int(r["label"]), 0, 0))
    elif task == "piqa":
        rows = read_rows(path, limit)
        if "label" not in rows[0]:
            with open(path[: -len(".jsonl")] + "_labels.lst") as f:
                labels = [int(x) for x in f.read().split()]
            for r, lab in zip(rows, labels):
                r["label"] = lab
        for r in rows:
            ctx = f"Question: {r['goal']}\nAnswer:"
            choices = [r["sol1"], r["sol2"]]
            docs.append(([(ctx, " " + c) for c in choices], choices, int(r["label"]), 0, 0))
    elif task in ("arc_easy", "arc_challenge"):
        for r in read_rows(path, limit):
            if isinstance(r["question"], dict):
                q = r["question"]["stem"]
                texts = [c["text"] for c in r["question"]["choices"]]
                labels = [c["label"] for c in r["question"]["choices"]]
            else:
                q, texts, labels = r["question"], r["choices"]["text"], r["choices"]["label"]
            ctx = f"Question: {q}\nAnswer:"
            docs.append(([(ctx, " " + c) for c in texts], texts, labels.index(r["answerKey"]), 0, 0))
    elif task == "winogrande":
        for r in read_rows(path, limit):
            i = r["sentence"].index("_")
            target = r["sentence"][i + 1:].strip()
            contexts = [r["sentence"][:i] + o for o in (r["option1"], r["option2"])]
            docs.append(([(c, " " + target) for c in contexts], contexts, int(r["answer"]) - 1, 0, 0))
    return docs


# ----------------------------------------------------------------------------------------------
# Requests and scoring (lm_eval/api/model.py, models/huggingface.py, utils.py)


def encode_request(bpe, context, continuation):
    enc = lambda s: bpe.encode(s.encode("utf-8", errors="surrogateescape"))  # noqa: E731
    if context == "":
        cont = enc(continuation)
        return ([EOT], cont) if cont[0] != EOT else (cont[:1], cont[1:])
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces > 0:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    whole = enc(context + continuation)
    ctx = enc(context)
    return ctx, whole[len(ctx):]


def rolling_windows(tokens, max_len):
    out = []
    if not tokens:
        return out
    first = min(max_len, len(tokens))
    windows = [([EOT] + tokens[: first - 1], tokens[:first])]
    predicted = first
    while predicted < len(tokens):
        n = min(len(tokens) - predicted, max_len)
        end = predicted + n
        windows.append((tokens[end - max_len - 1: end - 1], tokens[end - n: end]))
        predicted += n
    for a, b in windows:
        out.append((a[: len(a) - (len(b) - 1)], b))
    return out


def score(p, ctx, cont):
    inp = (ctx + cont)[-(BLOCK + 1):][:-1]
    logp = torch.log_softmax(logits_of(p, inp), dim=-1)[-len(cont):]
    ll = float(logp[torch.arange(len(cont)), torch.tensor(cont)].sum())
    greedy = bool((logp.argmax(dim=-1) == torch.tensor(cont)).all())
    return ll, greedy


def mean(xs):
    return sum(xs) / len(xs)


def sample_stddev(xs):
    mu = mean(xs)
    return math.sqrt(sum((x - mu) ** 2 for x in xs) / (len(xs) - 1))


def mean_stderr(xs):
    return sample_stddev(xs) / math.sqrt(len(xs)) if len(xs) > 1 else None  # lm-eval: "N/A"


def bootstrap_perplexity(xs):
    res = []
    chunk = min(1000, BOOTSTRAP_ITERS)
    for i in range(BOOTSTRAP_ITERS // chunk):
        rnd = random.Random(i)
        for _ in range(chunk):
            res.append(math.exp(-mean(rnd.choices(xs, k=len(xs)))))
    return sample_stddev(res)


def run_case(p, bpe, task, path, limit):
    docs = docs_of(task, path, limit)
    rows, per_doc = [], []
    for d, (reqs, choices, gold, words, nbytes) in enumerate(docs):
        if task == "wikitext":
            tokens = bpe.encode(reqs[0][1].encode("utf-8"))
            lls = []
            for w, (ctx, cont) in enumerate(rolling_windows(tokens, BLOCK)):
                ll, g = score(p, ctx, cont)
                rows.append([d, w, len(ctx), len(cont), ll, g])
                lls.append(ll)
            per_doc.append((sum(lls), words, nbytes))
            continue
        results = []
        for i, (c, x) in enumerate(reqs):
            ctx, cont = encode_request(bpe, c, x)
            ll, g = score(p, ctx, cont)
            rows.append([d, i, len(ctx), len(cont), ll, g])
            results.append((ll, g))
        per_doc.append((results, choices, gold))
    metrics = {}
    if task == "wikitext":
        ll = sum(x[0] for x in per_doc)
        words = sum(x[1] for x in per_doc)
        nbytes = sum(x[2] for x in per_doc)
        metrics["word_perplexity"] = [math.exp(-ll / words), None]
        metrics["byte_perplexity"] = [math.exp(-ll / nbytes), None]
        metrics["bits_per_byte"] = [-ll / nbytes / math.log(2), None]
    elif task == "lambada_openai":
        lls = [r[0][0][0] for r in per_doc]
        acc = [float(r[0][0][1]) for r in per_doc]
        metrics["perplexity"] = [math.exp(-mean(lls)), bootstrap_perplexity(lls)]
        metrics["acc"] = [mean(acc), mean_stderr(acc)]
    else:
        acc, acc_norm = [], []
        for results, choices, gold in per_doc:
            lls = [r[0] for r in results]
            pred = max(range(len(lls)), key=lambda i: (lls[i], -i))
            norm = [ll / len(c) for ll, c in zip(lls, choices)]
            pred_norm = max(range(len(norm)), key=lambda i: (norm[i], -i))
            acc.append(1.0 if pred == gold else 0.0)
            acc_norm.append(1.0 if pred_norm == gold else 0.0)
        metrics["acc"] = [mean(acc), mean_stderr(acc)]
        if task != "winogrande":
            metrics["acc_norm"] = [mean(acc_norm), mean_stderr(acc_norm)]
    return rows, metrics


CASES = [
    # (task, file relative to the project root, limit; 0 = all)
    ("wikitext", "tests/fixtures/eval/wikitext_test.jsonl", 0),
    ("wikitext", "tests/fixtures/eval/wiki.test.raw", 0),
    ("lambada_openai", "../shared/data/eval/lambada_openai_test.jsonl", 12),
    ("hellaswag", "tests/fixtures/eval/hellaswag_validation.jsonl", 0),
    ("hellaswag", "tests/fixtures/eval/hellaswag_val.jsonl", 0),
    ("piqa", "../shared/data/eval/piqa_valid.jsonl", 12),
    ("piqa", "tests/fixtures/eval/piqa_validation.jsonl", 0),
    ("arc_easy", "tests/fixtures/eval/arc_easy_test.jsonl", 0),
    ("arc_challenge", "tests/fixtures/eval/ARC-Challenge-Test.jsonl", 0),
    ("winogrande", "tests/fixtures/eval/winogrande_validation.jsonl", 0),
]


def main():
    params = make_params()
    write_model(params)
    bpe = Gpt2Bpe(os.path.join(ROOT, "data", "vocab"))
    out = {"model": "tests/fixtures/eval_tiny", "bootstrap_iters": BOOTSTRAP_ITERS,
           "columns": ["doc", "request", "context_tokens", "continuation_tokens", "loglikelihood", "is_greedy"],
           "cases": []}
    for task, rel, limit in CASES:
        rows, metrics = run_case(params, bpe, task, os.path.join(ROOT, rel), limit)
        out["cases"].append({"task": task, "file": rel, "limit": limit, "requests": rows, "metrics": metrics})
        print(task, rel, len(rows), "requests", metrics)
    with open(os.path.join(ROOT, "tests", "fixtures", "eval_reference.json"), "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
