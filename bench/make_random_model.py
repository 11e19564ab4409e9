#!/usr/bin/env python3
"""Writes a GPT-2-shaped model directory with random weights stored as F32, F16 or BF16
safetensors (config.json + model.safetensors), for load and memory benchmarks of checkpoints in
reduced precision (docs/weights.md, "Memory of a reduced-precision load"). NumPy only: the
safetensors bytes are written here (8-byte header length, JSON header, raw little-endian data).

  /usr/bin/python3 bench/make_random_model.py --out /tmp/gpt2-bf16 --dtype BF16
      [--n-layer 12 --n-head 12 --n-embd 768 --n-positions 1024 --vocab-size 50257]

Weights are N(0, 0.02) (LayerNorm weights 1, biases 0), drawn in fp32 and rounded to the dtype
(BF16 round to nearest even, F16 by NumPy's float16 cast). Tensors are generated one at a time,
so the script needs about one tensor of fp32 memory beyond the file it writes.
"""
import argparse
import json
import os
import struct

import numpy as np


def tensor_shapes(n_layer, n_embd, n_positions, vocab_size):
    """(name, shape) of GPT-2's parameters in Hugging Face names and Conv1D layout."""
    c = n_embd
    shapes = [("wte.weight", (vocab_size, c)), ("wpe.weight", (n_positions, c))]
    for l in range(n_layer):
        p = f"h.{l}."
        shapes += [(p + "ln_1.weight", (c,)), (p + "ln_1.bias", (c,)),
                   (p + "attn.c_attn.weight", (c, 3 * c)), (p + "attn.c_attn.bias", (3 * c,)),
                   (p + "attn.c_proj.weight", (c, c)), (p + "attn.c_proj.bias", (c,)),
                   (p + "ln_2.weight", (c,)), (p + "ln_2.bias", (c,)),
                   (p + "mlp.c_fc.weight", (c, 4 * c)), (p + "mlp.c_fc.bias", (4 * c,)),
                   (p + "mlp.c_proj.weight", (4 * c, c)), (p + "mlp.c_proj.bias", (c,))]
    return shapes + [("ln_f.weight", (c,)), ("ln_f.bias", (c,))]


def values(name, shape, rng):
    if len(shape) == 1:
        return np.full(shape, 1.0 if name.endswith("weight") else 0.0, dtype=np.float32)
    return rng.normal(0.0, 0.02, size=shape).astype(np.float32)


def encode(x, dtype):
    """The little-endian bytes of fp32 array x in `dtype`."""
    if dtype == "F32":
        return x.astype("<f4").tobytes()
    if dtype == "F16":
        return x.astype("<f2").tobytes()
    bits = x.view(np.uint32).astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16  # nearest even (no NaN in random data)
    return rounded.astype("<u2").tobytes()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--dtype", choices=["F32", "F16", "BF16"], default="BF16")
    ap.add_argument("--n-layer", type=int, default=12)
    ap.add_argument("--n-head", type=int, default=12)
    ap.add_argument("--n-embd", type=int, default=768)
    ap.add_argument("--n-positions", type=int, default=1024)
    ap.add_argument("--vocab-size", type=int, default=50257)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()

    width = {"F32": 4, "F16": 2, "BF16": 2}[a.dtype]
    shapes = tensor_shapes(a.n_layer, a.n_embd, a.n_positions, a.vocab_size)
    header = {"__metadata__": {"format": "pt", "gaincell_layout": "conv1d"}}
    offset = 0
    for name, shape in shapes:
        size = int(np.prod(shape)) * width
        header[name] = {"dtype": a.dtype, "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    head = json.dumps(header).encode()
    os.makedirs(a.out, exist_ok=True)
    rng = np.random.default_rng(a.seed)
    tmp = os.path.join(a.out, "model.safetensors.tmp")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(head)))
        f.write(head)
        for name, shape in shapes:
            f.write(encode(values(name, shape, rng), a.dtype))
    os.replace(tmp, os.path.join(a.out, "model.safetensors"))
    config = {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "n_layer": a.n_layer,
              "n_head": a.n_head, "n_embd": a.n_embd, "n_positions": a.n_positions,
              "n_ctx": a.n_positions, "vocab_size": a.vocab_size, "layer_norm_epsilon": 1e-5}
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    print(f"wrote {a.out}: {sum(int(np.prod(s)) for _, s in shapes)} parameters as {a.dtype}")


if __name__ == "__main__":
    main()
