"""A PyTorch GPT-2 whose attention core is gaincell.torch.GainCellAttention (issue 15).

Written from the architecture description (not imported from transformers): pre-LN blocks
x = x + attn(ln_1(x)); x = x + mlp(ln_2(x)); tanh-GELU MLP of width 4C; learned positions;
LayerNorm with the config's eps; biases; ln_f; logits = ln_f(x) wte^T (tied head). The attention
splits c_attn(x) into q, k, v [B, H, T, D] and hands them to the gain-cell core, then c_proj.
Weights use the Hugging Face names and Conv1D layout ([in, out], y = x W + b), so a gaincell model
directory loads by name; the scalers h.{l}.attn.{q,k,v,output}_scaler.{a,b} map to
h.{l}.attn.core.<same>.

Used by tests/python/test_gpt2_train.py (against `gaincell train`'s first step) and by
examples/python/nanogpt_gaincell.py's reader.
"""
import json
import struct

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from gaincell.torch import GainCellAttention


class Conv1D(nn.Module):
    def __init__(self, n_in, n_out):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(n_in, n_out))
        self.bias = nn.Parameter(torch.zeros(n_out))

    def forward(self, x):
        return x @ self.weight + self.bias


class Attention(nn.Module):
    def __init__(self, cfg, layer, hw, variant):
        super().__init__()
        C, H = cfg["n_embd"], cfg["n_head"]
        self.n_head = H
        self.c_attn = Conv1D(C, 3 * C)
        self.c_proj = Conv1D(C, C)
        self.core = GainCellAttention(H, C // H, hw=hw, layer=layer, variant=variant)

    def forward(self, x):
        B, T, C = x.shape
        H = self.n_head
        q, k, v = self.c_attn(x).split(C, dim=2)
        # [B, T, C] -> [B, H, T, D]; the core needs contiguous tensors.
        q, k, v = (t.view(B, T, H, C // H).transpose(1, 2).contiguous() for t in (q, k, v))
        y = self.core(q, k, v)
        return self.c_proj(y.transpose(1, 2).reshape(B, T, C))


class MLP(nn.Module):
    def __init__(self, C):
        super().__init__()
        self.c_fc = Conv1D(C, 4 * C)
        self.c_proj = Conv1D(4 * C, C)

    def forward(self, x):
        return self.c_proj(F.gelu(self.c_fc(x), approximate="tanh"))


class Block(nn.Module):
    def __init__(self, cfg, layer, hw, variant):
        super().__init__()
        eps = cfg.get("layer_norm_epsilon", 1e-5)
        self.ln_1 = nn.LayerNorm(cfg["n_embd"], eps=eps)
        self.attn = Attention(cfg, layer, hw, variant)
        self.ln_2 = nn.LayerNorm(cfg["n_embd"], eps=eps)
        self.mlp = MLP(cfg["n_embd"])

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT2GainCell(nn.Module):
    def __init__(self, cfg, hw=None, variant=None):
        super().__init__()
        self.cfg = cfg
        C = cfg["n_embd"]
        self.wte = nn.Embedding(cfg["vocab_size"], C)
        self.wpe = nn.Embedding(cfg.get("n_positions", cfg.get("block_size")), C)
        self.h = nn.ModuleList(Block(cfg, l, hw, variant) for l in range(cfg["n_layer"]))
        self.ln_f = nn.LayerNorm(C, eps=cfg.get("layer_norm_epsilon", 1e-5))

    def forward(self, idx, targets=None):
        T = idx.shape[1]
        x = self.wte(idx) + self.wpe(torch.arange(T))
        for block in self.h:
            x = block(x)
        logits = self.ln_f(x) @ self.wte.weight.t()
        if targets is None:
            return logits
        loss = F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.view(-1),
                               ignore_index=-1)
        return logits, loss

    @staticmethod
    def gaincell_name(torch_name):
        """The gaincell checkpoint name of a parameter (h.0.attn.core.q_scaler.a ->
        h.0.attn.q_scaler.a)."""
        return torch_name.replace(".attn.core.", ".attn.")

    def load_gaincell_weights(self, tensors):
        """Copies {gaincell name: array} into the model; returns the names it did not find."""
        missing = []
        with torch.no_grad():
            for name, p in self.named_parameters():
                src = tensors.get(self.gaincell_name(name))
                if src is None:
                    missing.append(name)
                    continue
                p.copy_(torch.from_numpy(np.array(src, dtype=np.float32)).view(p.shape))
        return missing


def read_safetensors(path):
    """{name: float32 array} of an F32 safetensors file (the format is a JSON header + data)."""
    blob = open(path, "rb").read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] != "F32":
            raise ValueError(f"{path}: {name} is {info['dtype']}, expected F32")
        a, b = info["data_offsets"]
        out[name] = np.frombuffer(blob[8 + n + a:8 + n + b], dtype="<f4").reshape(info["shape"])
    return out


def load_model_dir(path, hw=None, variant=None):
    """A gaincell / Hugging Face GPT-2 model directory (Conv1D layout) as GPT2GainCell."""
    cfg = json.load(open(f"{path}/config.json"))
    model = GPT2GainCell(cfg, hw=hw, variant=variant)
    missing = model.load_gaincell_weights(read_safetensors(f"{path}/model.safetensors"))
    # Scalers a checkpoint does not hold keep their initial values, as gaincell's load_model does.
    unexpected = [n for n in missing if "_scaler." not in n]
    if unexpected:
        raise ValueError(f"{path}: missing tensors {unexpected}")
    return model
