#!/usr/bin/env python3
"""Writes tests/fixtures/safetensors_mixed.{safetensors,json}: a safetensors file built by hand
(struct + json, independent of the C++ writer) holding F32, F16, BF16 and I64 tensors, and the
expected fp32 values of the float tensors as converted by PyTorch.

The F16/BF16 values include subnormals, infinities, a NaN and values that round, so the C++
conversion is checked bit for bit. The header is deliberately not padded (an odd length), so the
data section is unaligned, and the tensors are stored out of header order.

Run: /usr/bin/python3 tests/reference/make_safetensors_fixture.py
"""
import json
import math
import os
import struct

import torch

here = os.path.dirname(os.path.abspath(__file__))
out_dir = os.path.join(here, "..", "fixtures")

torch.manual_seed(1234)
f32 = torch.randn(3, 4, dtype=torch.float32)
f16_src = torch.tensor([0.0, -0.0, 1.0, -2.5, 65504.0, 6.0e-8, 1.0e-5, 3.14159, float("inf"),
                        -float("inf"), 0.1, 1000.7], dtype=torch.float32)
f16 = f16_src.to(torch.float16).reshape(2, 6)
bf16_src = torch.cat([torch.randn(9), torch.tensor([1e-39, -3.0e38, float("nan")])])
bf16 = bf16_src.to(torch.bfloat16).reshape(4, 3)
i64 = torch.arange(5, dtype=torch.int64)
scalar = torch.tensor(7.25, dtype=torch.float32)


def raw(t):
    return t.contiguous().view(torch.uint8).numpy().tobytes() if t.dim() else \
        t.reshape(1).view(torch.uint8).numpy().tobytes()


# Data stored in this order (not the header order).
entries = [("transformer.wte.weight", "F32", f32), ("h.0.ln_1.weight", "F16", f16),
           ("counts", "I64", i64), ("h.0.attn.bias_bf16", "BF16", bf16), ("scalar", "F32", scalar)]
data = b""
header = {"__metadata__": {"format": "pt", "note": "hand-built fixture"}}
for name, dtype, t in entries:
    b = raw(t)
    header[name] = {"dtype": dtype, "shape": list(t.shape), "data_offsets": [len(data), len(data) + len(b)]}
    data += b
# Header order differs from data order: reverse the tensor keys.
ordered = {"__metadata__": header["__metadata__"]}
for name, _, _ in reversed(entries):
    ordered[name] = header[name]
text = json.dumps(ordered, separators=(",", ":"))
if len(text) % 2 == 0:
    text += " "  # odd length: data section unaligned
blob = struct.pack("<Q", len(text)) + text.encode() + data
with open(os.path.join(out_dir, "safetensors_mixed.safetensors"), "wb") as f:
    f.write(blob)


def values(t):
    out = []
    for v in t.float().reshape(-1).tolist():
        out.append("nan" if math.isnan(v) else ("inf" if v == math.inf else ("-inf" if v == -math.inf else v)))
    return out


expected = {
    "metadata": header["__metadata__"],
    "tensors": {name: {"dtype": dtype, "shape": list(t.shape), "values": values(t)}
                for name, dtype, t in entries if dtype != "I64"},
    "data_start": 8 + len(text),
}
with open(os.path.join(out_dir, "safetensors_mixed.json"), "w") as f:
    json.dump(expected, f, indent=1)
print("wrote", len(blob), "bytes")
