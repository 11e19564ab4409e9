#!/usr/bin/python3
"""Overhead of the PyTorch operation gaincell.torch over the C++ kernel it calls (issue 15).

Shapes of GPT-2 124M's attention: B=4, T=256, 12 heads of dimension 64, paper-nonlinear. Each
repetition runs the module's forward and backward through torch autograd; the C++ layer times its
own GainCellAttention::forward/backward (the code `gaincell train` runs) with the GIL released,
so the limit (the C++ kernel) and the op are measured in the same run on the same data. The
overhead is (op wall time - C++ time) / C++ time, median over the repetitions.

    PYTHONPATH=build/python OMP_NUM_THREADS=2 /usr/bin/python3 bench/bench_python_attention.py

Prints one JSON object. Target: overhead_fraction < 0.05.
"""
import argparse
import json
import os
import statistics
import time

import torch

import gaincell
from gaincell.torch import GainCellAttention, _apply


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--hw", default="paper-nonlinear")
    args = ap.parse_args()
    B, T, H, D = args.batch, args.tokens, args.heads, args.head_dim

    torch.manual_seed(0)
    m = GainCellAttention(H, D, hw=args.hw)
    q0, k0, v0 = (torch.randn(B, H, T, D) for _ in range(3))
    grad_out = torch.randn(B, H, T, D)
    calls = []

    def record(call, keep):
        calls.append(call)

    op_s, cpp_s = [], []
    for rep in range(args.reps + 1):  # the first repetition warms up (allocations, threads)
        q, k, v = (x.clone().requires_grad_(True) for x in (q0, k0, v0))
        start = time.perf_counter()
        y = _apply(q, k, v, m.scalers(), m._core, record)
        y.backward(grad_out)
        wall = time.perf_counter() - start
        call = calls[-1]
        if rep > 0:
            op_s.append(wall)
            cpp_s.append(call.forward_s + call.backward_s)
    overheads = [(o - c) / c for o, c in zip(op_s, cpp_s)]
    print(json.dumps({
        "bench": "python_attention_overhead",
        "shape": {"B": B, "T": T, "heads": H, "head_dim": D},
        "hw": args.hw,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "torch_threads": torch.get_num_threads(),
        "reps": args.reps,
        "cpp_kernel_s_median": statistics.median(cpp_s),
        "op_s_median": statistics.median(op_s),
        "overhead_fraction_median": statistics.median(overheads),
        "overhead_fraction_min": min(overheads),
        "overhead_fraction_max": max(overheads),
        "target_overhead_fraction": 0.05,
        "gaincell_version": gaincell.__version__,
    }, indent=1))


if __name__ == "__main__":
    main()
