#!/usr/bin/python3
"""Independent PyTorch reference for gaincell's Llama-family engine (issue 12 acceptance).

Run with Debian's torch:  /usr/bin/python3 tests/reference/llama_reference.py
Written from the Hugging Face model definitions (LlamaForCausalLM, MistralForCausalLM,
Qwen2ForCausalLM), not imported from transformers. It rewrites (deterministically, seed 4321),
for each family F in llama, mistral, qwen2:

  tests/fixtures/llama_family/F/config.json      Hugging Face config (+ gaincell_attention softmax)
  tests/fixtures/llama_family/F/model.safetensors  random weights, HF names, nn.Linear layout
      (mistral: sharded as model-0000{1,2}-of-00002.safetensors + model.safetensors.index.json
       in BF16; qwen2: F16; llama: F32. The reference uses exactly the stored, rounded values.)
  tests/fixtures/llama_family/F_reference.safetensors   little-endian debug state:
      "inputs" I32 [B, T], "targets" I32 [B, T] (-1 = ignored), "logits" F32 [B, T, V],
      "loss" F32 [1], "grad.<name>" F32 for every parameter (the HF tensor names).

The three configurations together cover what the issue asks for:
  llama    GQA (4 query heads, 2 KV heads), head_dim 16 != hidden/heads (8), untied lm_head,
           attention_bias and mlp_bias on, rope_scaling llama3 with original_max_position 16
           (so all three frequency bands occur: kept, smoothed, divided)
  mistral  4 query heads sharing 1 KV head (n_rep 4), sliding_window 5 < T = 12, tied embeddings,
           rope_theta 1000
  qwen2    GQA (n_rep 2), q/k/v biases, untied, use_sliding_window with max_window_layers 1 (layer
           0 full causal, layer 1 window 6)

Model (HF definitions): x = embed(ids); per layer x = x + o_proj(attn(rope(q), rope(k), v)) over
input_layernorm(x); x = x + down(silu(gate(h)) * up(h)), h = post_attention_layernorm(x); RMSNorm
y = x / sqrt(mean(x^2) + eps) * w; logits = norm(x) lm_head^T. RoPE in rotate-half form with
inv_freq = 1 / theta^(2i/D) in float32 and angles pos * inv_freq in float32 (as HF computes them),
cos/sin then used in float64. GQA: KV head g serves query heads g*n_rep .. g*n_rep + n_rep - 1.
Sliding window W: query t sees keys t - W + 1 .. t. Loss: mean cross-entropy over targets != -1.
"""
import json
import math
import os
import struct

import torch

torch.set_default_dtype(torch.float64)

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "fixtures", "llama_family")
B, T = 2, 12

FAMILIES = {
    "llama": dict(
        config={"model_type": "llama", "architectures": ["LlamaForCausalLM"],
                "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2,
                "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
                "max_position_embeddings": 32, "vocab_size": 67, "rms_norm_eps": 1e-5,
                "rope_theta": 10000.0, "hidden_act": "silu", "tie_word_embeddings": False,
                "attention_bias": True, "mlp_bias": True,
                "rope_scaling": {"rope_type": "llama3", "factor": 4.0, "low_freq_factor": 1.0,
                                 "high_freq_factor": 4.0,
                                 "original_max_position_embeddings": 16}},
        dtype="F32", shards=1),
    "mistral": dict(
        config={"model_type": "mistral", "architectures": ["MistralForCausalLM"],
                "hidden_size": 32, "intermediate_size": 40, "num_hidden_layers": 2,
                "num_attention_heads": 4, "num_key_value_heads": 1,
                "max_position_embeddings": 32, "vocab_size": 61, "rms_norm_eps": 1e-6,
                "rope_theta": 1000.0, "hidden_act": "silu", "tie_word_embeddings": True,
                "sliding_window": 5},
        dtype="BF16", shards=2),
    "qwen2": dict(
        config={"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"],
                "hidden_size": 32, "intermediate_size": 56, "num_hidden_layers": 2,
                "num_attention_heads": 4, "num_key_value_heads": 2,
                "max_position_embeddings": 32, "vocab_size": 71, "rms_norm_eps": 1e-6,
                "rope_theta": 10000.0, "hidden_act": "silu", "tie_word_embeddings": False,
                "use_sliding_window": True, "sliding_window": 6, "max_window_layers": 1},
        dtype="F16", shards=1),
}


def dims(c):
    H, Hkv = c["num_attention_heads"], c.get("num_key_value_heads", c["num_attention_heads"])
    D = c.get("head_dim") or c["hidden_size"] // H
    return c["hidden_size"], H, Hkv, D, c["intermediate_size"], c["vocab_size"]


def biases(c):
    """(q/k/v bias, o_proj bias, mlp bias) as the HF classes define them."""
    t = c["model_type"]
    if t == "llama":
        return c.get("attention_bias", False), c.get("attention_bias", False), c.get("mlp_bias", False)
    if t == "qwen2":
        return True, False, False
    return False, False, False


def make_params(c):
    C, H, Hkv, D, I, V = dims(c)
    qkv_b, o_b, mlp_b = biases(c)
    p = {}

    def rnd(name, shape, std):
        p[name] = torch.randn(*shape) * std

    rnd("model.embed_tokens.weight", (V, C), 0.5)
    for l in range(c["num_hidden_layers"]):
        h = f"model.layers.{l}."
        p[h + "input_layernorm.weight"] = 1.0 + 0.2 * torch.randn(C)
        rnd(h + "self_attn.q_proj.weight", (H * D, C), 0.3)
        rnd(h + "self_attn.k_proj.weight", (Hkv * D, C), 0.3)
        rnd(h + "self_attn.v_proj.weight", (Hkv * D, C), 0.3)
        if qkv_b:
            rnd(h + "self_attn.q_proj.bias", (H * D,), 0.1)
            rnd(h + "self_attn.k_proj.bias", (Hkv * D,), 0.1)
            rnd(h + "self_attn.v_proj.bias", (Hkv * D,), 0.1)
        rnd(h + "self_attn.o_proj.weight", (C, H * D), 0.2)
        if o_b:
            rnd(h + "self_attn.o_proj.bias", (C,), 0.1)
        p[h + "post_attention_layernorm.weight"] = 1.0 + 0.2 * torch.randn(C)
        rnd(h + "mlp.gate_proj.weight", (I, C), 0.3)
        rnd(h + "mlp.up_proj.weight", (I, C), 0.3)
        rnd(h + "mlp.down_proj.weight", (C, I), 0.2)
        if mlp_b:
            rnd(h + "mlp.gate_proj.bias", (I,), 0.1)
            rnd(h + "mlp.up_proj.bias", (I,), 0.1)
            rnd(h + "mlp.down_proj.bias", (C,), 0.1)
    p["model.norm.weight"] = 1.0 + 0.2 * torch.randn(C)
    if not c["tie_word_embeddings"]:
        rnd("lm_head.weight", (V, C), 0.3)
    return p


def round_to(dtype, t):
    """The values the C++ engine reads back from a file of this dtype."""
    torch_dtype = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}[dtype]
    return t.to(torch_dtype).to(torch.float64)


def inv_freq(c):
    C, H, Hkv, D, I, V = dims(c)
    theta = c.get("rope_theta", 10000.0)
    f = 1.0 / (theta ** (torch.arange(0, D, 2, dtype=torch.int64).float() / D))  # float32, as HF
    rs = c.get("rope_scaling")
    if rs and rs.get("rope_type", rs.get("type")) == "llama3":
        factor, low, high = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"]
        old = rs["original_max_position_embeddings"]
        low_wavelen, high_wavelen = old / low, old / high
        wavelen = 2 * math.pi / f
        scaled = torch.where(wavelen > low_wavelen, f / factor, f)
        smooth = (old / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
        f = torch.where(medium, smoothed, scaled)
    return f.to(torch.float32)


def rope(x, c):
    """x: [B, heads, T, D]; rotate-half RoPE at positions 0..T-1."""
    D = x.shape[-1]
    pos = torch.arange(x.shape[2], dtype=torch.float32)
    angles = (pos[:, None] * inv_freq(c)[None, :]).to(torch.float64)  # float32 product, as HF
    emb = torch.cat([angles, angles], dim=-1)
    cos, sin = emb.cos(), emb.sin()
    x1, x2 = x[..., : D // 2], x[..., D // 2:]
    rotated = torch.cat([-x2, x1], dim=-1)
    return x * cos + rotated * sin


def rmsnorm(x, w, eps):
    return x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps) * w


def layer_window(c, l):
    t = c["model_type"]
    if t == "mistral":
        return c.get("sliding_window") or 0
    if t == "qwen2" and c.get("use_sliding_window") and l >= c.get("max_window_layers", 0):
        return c.get("sliding_window") or 0
    return 0


def linear(x, p, name, has_bias):
    y = x @ p[name + ".weight"].T
    return y + p[name + ".bias"] if has_bias else y


def attention(x, p, h, c, l):
    C, H, Hkv, D, I, V = dims(c)
    qkv_b, o_b, _ = biases(c)
    Bx, Tx, _ = x.shape
    q = linear(x, p, h + "self_attn.q_proj", qkv_b).view(Bx, Tx, H, D).transpose(1, 2)
    k = linear(x, p, h + "self_attn.k_proj", qkv_b).view(Bx, Tx, Hkv, D).transpose(1, 2)
    v = linear(x, p, h + "self_attn.v_proj", qkv_b).view(Bx, Tx, Hkv, D).transpose(1, 2)
    q, k = rope(q, c), rope(k, c)
    rep = H // Hkv
    k = k.repeat_interleave(rep, dim=1)  # KV head g serves query heads g*rep .. g*rep+rep-1
    v = v.repeat_interleave(rep, dim=1)
    s = (q @ k.transpose(-2, -1)) / math.sqrt(D)
    i = torch.arange(Tx)[:, None]
    j = torch.arange(Tx)[None, :]
    visible = j <= i
    W = layer_window(c, l)
    if W > 0:
        visible = visible & (j > i - W)
    s = s.masked_fill(~visible, float("-inf"))
    y = torch.softmax(s, dim=-1) @ v
    y = y.transpose(1, 2).reshape(Bx, Tx, H * D)
    return linear(y, p, h + "self_attn.o_proj", o_b)


def forward(p, c, idx, targets):
    _, _, mlp_b = biases(c)
    eps = c["rms_norm_eps"]
    x = p["model.embed_tokens.weight"][idx]
    for l in range(c["num_hidden_layers"]):
        h = f"model.layers.{l}."
        x = x + attention(rmsnorm(x, p[h + "input_layernorm.weight"], eps), p, h, c, l)
        m = rmsnorm(x, p[h + "post_attention_layernorm.weight"], eps)
        g = linear(m, p, h + "mlp.gate_proj", mlp_b)
        u = linear(m, p, h + "mlp.up_proj", mlp_b)
        x = x + linear(torch.nn.functional.silu(g) * u, p, h + "mlp.down_proj", mlp_b)
    x = rmsnorm(x, p["model.norm.weight"], eps)
    head = p["model.embed_tokens.weight"] if c["tie_word_embeddings"] else p["lm_head.weight"]
    logits = x @ head.T
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                             targets.reshape(-1), ignore_index=-1)
    return logits, loss


def tensor_bytes(t, dtype):
    if dtype == "I32":
        return t.detach().to(torch.int32).contiguous().numpy().tobytes()
    if dtype == "F32":
        return t.detach().to(torch.float32).contiguous().numpy().tobytes()
    if dtype == "F16":
        return t.detach().to(torch.float16).contiguous().numpy().tobytes()
    # BF16: the upper half of the float32 bits of the (already bf16-exact) value.
    raw = t.detach().to(torch.bfloat16).to(torch.float32).contiguous().numpy().tobytes()
    return b"".join(raw[i + 2:i + 4] for i in range(0, len(raw), 4))


def write_safetensors(path, tensors, dtype_of=lambda name, t: "F32"):
    header, blobs, offset = {}, [], 0
    for name, t in tensors:
        dtype = "I32" if not t.dtype.is_floating_point else dtype_of(name, t)
        data = tensor_bytes(t, dtype)
        header[name] = {"dtype": dtype, "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    header["__metadata__"] = {"format": "pt"}
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * ((8 - len(head) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(head)))
        f.write(head)
        for blob in blobs:
            f.write(blob)


def write_model(model_dir, params, dtype, shards):
    names = list(params.keys())
    for old in os.listdir(model_dir):
        if old.startswith("model"):
            os.remove(os.path.join(model_dir, old))
    if shards == 1:
        write_safetensors(os.path.join(model_dir, "model.safetensors"),
                          [(n, params[n]) for n in names], lambda n, t: dtype)
        return
    per = (len(names) + shards - 1) // shards
    weight_map = {}
    for s in range(shards):
        file = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        part = names[s * per:(s + 1) * per]
        write_safetensors(os.path.join(model_dir, file), [(n, params[n]) for n in part],
                          lambda n, t: dtype)
        weight_map.update({n: file for n in part})
    with open(os.path.join(model_dir, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": 0}, "weight_map": weight_map}, f, indent=2)
        f.write("\n")


def main():
    torch.manual_seed(4321)
    for family, spec in FAMILIES.items():
        c = spec["config"]
        V = c["vocab_size"]
        raw = make_params(c)
        params = {n: round_to(spec["dtype"], t).requires_grad_(True) for n, t in raw.items()}
        idx = torch.randint(0, V, (B, T))
        targets = torch.randint(0, V, (B, T))
        targets[0, 2] = -1
        targets[1, 7] = -1
        logits, loss = forward(params, c, idx, targets)
        loss.backward()

        model_dir = os.path.join(OUT, family)
        os.makedirs(model_dir, exist_ok=True)
        with open(os.path.join(model_dir, "config.json"), "w") as f:
            json.dump(dict(c, gaincell_attention="softmax"), f, indent=2)
            f.write("\n")
        write_model(model_dir, {n: t.detach() for n, t in params.items()}, spec["dtype"],
                    spec["shards"])
        ref = [("inputs", idx), ("targets", targets), ("logits", logits.detach()),
               ("loss", loss.detach().reshape(1))]
        ref += [("grad." + n, params[n].grad) for n in params]
        write_safetensors(os.path.join(OUT, family + "_reference.safetensors"), ref)
        print(f"{family}: loss {loss.item():.6f}, {len(params)} tensors, {spec['dtype']}, "
              f"{spec['shards']} shard(s)")


if __name__ == "__main__":
    main()
