#!/usr/bin/env python3
"""Writes tests/fixtures/adamw_reference.json: torch.optim.AdamW (betas 0.9/0.95, eps 1e-8, weight
decay 0.1 on the rank-2 tensor only) and torch.nn.utils.clip_grad_norm_(max_norm=1.0) over 6 steps
with per-step learning rates and random gradients, recording the gradient norm before clipping and
all parameters after each step.

Layout of the flat buffer the C++ test builds: W (4x3, decayed) at 0, b (3) at 12, g (5) at 15.
Run: /usr/bin/python3 tests/reference/make_adamw_fixture.py
"""
import json
import os

import torch

torch.manual_seed(2024)
W = torch.nn.Parameter(torch.randn(4, 3))
b = torch.nn.Parameter(torch.randn(3))
g = torch.nn.Parameter(torch.ones(5))
params = [W, b, g]
opt = torch.optim.AdamW([{"params": [W], "weight_decay": 0.1},
                         {"params": [b, g], "weight_decay": 0.0}],
                        lr=1e-3, betas=(0.9, 0.95), eps=1e-8)
lrs = [1e-3, 2e-2, 3e-2, 2.5e-2, 1e-2, 5e-3]
# Gradient scales: some steps are clipped (norm > 1), some are not, one is tiny (eps matters).
scales = [0.1, 3.0, 0.5, 1e-7, 2.0, 0.2]

flat = lambda: torch.cat([p.detach().reshape(-1) for p in params]).tolist()
out = {"initial": flat(), "steps": []}
for lr, scale in zip(lrs, scales):
    grads = [torch.randn_like(p) * scale for p in params]
    for p, gr in zip(params, grads):
        p.grad = gr.clone()
    raw = torch.cat([gr.reshape(-1) for gr in grads]).tolist()
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm=1.0).item()
    for group in opt.param_groups:
        group["lr"] = lr
    opt.step()
    out["steps"].append({"lr": lr, "grads": raw, "norm": norm, "params": flat()})

path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "adamw_reference.json")
with open(path, "w") as f:
    json.dump(out, f)
print("wrote", path)
