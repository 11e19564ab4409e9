#!/usr/bin/python3
"""Independent PyTorch reference for the gaincell GPT-2 engine (issue 2 acceptance).

Run with Debian's torch:  /usr/bin/python3 tests/reference/gpt2_reference.py
It rewrites (deterministically, seed 1234):

  tests/fixtures/gpt2_tiny/config.json        Hugging Face GPT-2 config (+ gaincell_attention)
  tests/fixtures/gpt2_tiny/model.safetensors  random weights, HF names and Conv1D layout ([in, out])
  tests/fixtures/gpt2_tiny_reference.safetensors   the debug state, all little-endian:
      "inputs"        I32 [B, T]   token ids
      "targets"       I32 [B, T]   next tokens; -1 = ignored (two positions are ignored)
      "logits"        F32 [B, T, V]
      "loss"          F32 [1]      mean cross-entropy over the non-ignored positions
      "grad.<name>"   F32 <shape>  d loss / d parameter, for every parameter of model.safetensors
      "adamw_losses"  F32 [10]     adamw_losses[i] = loss of the forward pass before update i
                                    (adamw_losses[0] == loss), same batch every step.
  AdamW recipe of adamw_losses (torch.optim.AdamW semantics):
      lr = 1e-3 constant (no warmup), betas = (0.9, 0.95), eps = 1e-8,
      weight_decay = 0.1 on tensors of rank >= 2 (wte, wpe, all *.weight matrices), 0 on the rest,
      decoupled decay p -= lr * wd * p applied before the Adam update (as torch does),
      bias-corrected moments, global gradient-norm clipping to 1.0 before each step
      (torch.nn.utils.clip_grad_norm_: g *= 1.0 / (norm + 1e-6) when norm > 1.0).
      The token embedding is tied to the LM head: one tensor, one gradient (sum of both uses).

Model (written from the architecture description, not imported from transformers): pre-LN blocks
x = x + attn(ln_1(x)); x = x + mlp(ln_2(x)); causal softmax attention with scale 1/sqrt(D); tanh-GELU
MLP of width 4C; learned positions; LayerNorm eps 1e-5; biases; ln_f; logits = ln_f(x) wte^T.
Weights are drawn larger than GPT-2's 0.02 (and LayerNorm affine terms are random) so that every
gradient is far from zero and a wrong backward cannot hide.
"""
import json
import os
import struct

import torch

torch.manual_seed(1234)
torch.set_default_dtype(torch.float64)  # reference computed in float64, stored as float32

N_LAYER, N_HEAD, N_EMBD, BLOCK, VOCAB = 2, 4, 32, 32, 101
B, T = 2, 16
EPS = 1e-5
ADAMW_STEPS = 10

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "..", "fixtures")


def make_params():
    C = N_EMBD
    p = {}

    def rnd(name, shape, std):
        p[name] = torch.randn(*shape) * std

    rnd("wte.weight", (VOCAB, C), 0.3)
    rnd("wpe.weight", (BLOCK, C), 0.1)
    for l in range(N_LAYER):
        h = f"h.{l}."
        p[h + "ln_1.weight"] = 1.0 + 0.2 * torch.randn(C)
        rnd(h + "ln_1.bias", (C,), 0.1)
        rnd(h + "attn.c_attn.weight", (C, 3 * C), 0.2)
        rnd(h + "attn.c_attn.bias", (3 * C,), 0.1)
        rnd(h + "attn.c_proj.weight", (C, C), 0.15)
        rnd(h + "attn.c_proj.bias", (C,), 0.1)
        p[h + "ln_2.weight"] = 1.0 + 0.2 * torch.randn(C)
        rnd(h + "ln_2.bias", (C,), 0.1)
        rnd(h + "mlp.c_fc.weight", (C, 4 * C), 0.2)
        rnd(h + "mlp.c_fc.bias", (4 * C,), 0.1)
        rnd(h + "mlp.c_proj.weight", (4 * C, C), 0.1)
        rnd(h + "mlp.c_proj.bias", (C,), 0.1)
    p["ln_f.weight"] = 1.0 + 0.2 * torch.randn(C)
    rnd("ln_f.bias", (C,), 0.1)
    # Round to float32 once: the C++ engine sees exactly these values.
    return {k: v.float().double().requires_grad_(True) for k, v in p.items()}


def layernorm(x, w, b):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + EPS) * w + b


def gelu_tanh(x):
    return 0.5 * x * (1.0 + torch.tanh(((2.0 / torch.pi) ** 0.5) * (x + 0.044715 * x ** 3)))


def attention(x, p, h):
    Bx, Tx, C = x.shape
    D = C // N_HEAD
    qkv = x @ p[h + "attn.c_attn.weight"] + p[h + "attn.c_attn.bias"]
    q, k, v = qkv.split(C, dim=2)
    q, k, v = (t.view(Bx, Tx, N_HEAD, D).transpose(1, 2) for t in (q, k, v))
    s = (q @ k.transpose(-2, -1)) / (D ** 0.5)
    causal = torch.tril(torch.ones(Tx, Tx, dtype=torch.bool))
    s = s.masked_fill(~causal, float("-inf"))
    y = torch.softmax(s, dim=-1) @ v
    y = y.transpose(1, 2).contiguous().view(Bx, Tx, C)
    return y @ p[h + "attn.c_proj.weight"] + p[h + "attn.c_proj.bias"]


def forward(p, idx, targets):
    x = p["wte.weight"][idx] + p["wpe.weight"][: idx.shape[1]]
    for l in range(N_LAYER):
        h = f"h.{l}."
        x = x + attention(layernorm(x, p[h + "ln_1.weight"], p[h + "ln_1.bias"]), p, h)
        m = layernorm(x, p[h + "ln_2.weight"], p[h + "ln_2.bias"])
        m = gelu_tanh(m @ p[h + "mlp.c_fc.weight"] + p[h + "mlp.c_fc.bias"])
        x = x + m @ p[h + "mlp.c_proj.weight"] + p[h + "mlp.c_proj.bias"]
    x = layernorm(x, p["ln_f.weight"], p["ln_f.bias"])
    logits = x @ p["wte.weight"].T
    loss = torch.nn.functional.cross_entropy(
        logits.view(-1, VOCAB), targets.view(-1), ignore_index=-1)
    return logits, loss


def write_safetensors(path, tensors):
    """tensors: list of (name, torch tensor); float -> F32, int -> I32."""
    header, blobs, offset = {}, [], 0
    for name, t in tensors:
        if t.dtype.is_floating_point:
            data, dtype = t.detach().to(torch.float32).contiguous().numpy().tobytes(), "F32"
        else:
            data, dtype = t.detach().to(torch.int32).contiguous().numpy().tobytes(), "I32"
        header[name] = {"dtype": dtype, "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * ((8 - len(head) % 8) % 8)  # align the data section to 8 bytes
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(head)))
        f.write(head)
        for blob in blobs:
            f.write(blob)


def main():
    params = make_params()
    names = list(params.keys())
    idx = torch.randint(0, VOCAB, (B, T))
    targets = torch.randint(0, VOCAB, (B, T))
    targets[0, 3] = -1
    targets[1, 10] = -1

    logits, loss = forward(params, idx, targets)
    loss.backward()
    grads = {n: params[n].grad.clone() for n in names}

    # 10 AdamW steps on the same batch (recipe in the module docstring).
    decay = [params[n] for n in names if params[n].dim() >= 2]
    no_decay = [params[n] for n in names if params[n].dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=1e-3, betas=(0.9, 0.95), eps=1e-8)
    losses = []
    for _ in range(ADAMW_STEPS):
        opt.zero_grad(set_to_none=False)
        _, step_loss = forward(params, idx, targets)
        losses.append(step_loss.item())
        step_loss.backward()
        torch.nn.utils.clip_grad_norm_(list(params.values()), 1.0)
        opt.step()

    model_dir = os.path.join(FIXTURES, "gpt2_tiny")
    os.makedirs(model_dir, exist_ok=True)
    config = {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"],
              "activation_function": "gelu_new", "n_layer": N_LAYER, "n_head": N_HEAD,
              "n_embd": N_EMBD, "n_positions": BLOCK, "n_ctx": BLOCK, "vocab_size": VOCAB,
              "layer_norm_epsilon": EPS, "gaincell_attention": "softmax"}
    with open(os.path.join(model_dir, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
    with torch.no_grad():
        # The weights before the AdamW steps (make_params is deterministic given the seed).
        torch.manual_seed(1234)
        initial = make_params()
    write_safetensors(os.path.join(model_dir, "model.safetensors"),
                      [(n, initial[n]) for n in names])
    ref = [("inputs", idx), ("targets", targets), ("logits", logits), ("loss", loss.reshape(1))]
    ref += [("grad." + n, grads[n]) for n in names]
    ref += [("adamw_losses", torch.tensor(losses))]
    write_safetensors(os.path.join(FIXTURES, "gpt2_tiny_reference.safetensors"), ref)
    print(f"loss {loss.item():.6f}; adamw losses {[round(x, 5) for x in losses]}")


if __name__ == "__main__":
    main()
