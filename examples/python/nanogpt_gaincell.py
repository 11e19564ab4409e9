#!/usr/bin/python3
"""Fine-tune a small nanoGPT-style PyTorch model with gain-cell attention (issue 15).

A character-level GPT (nn.Linear layers, as nanoGPT writes them) is first trained briefly with
ordinary causal softmax attention; then the core of every attention layer (what comes after the
q/k/v projections) is replaced by gaincell.torch.GainCellAttention, which runs the simulated
gain-cell hardware in the forward pass and the surrogate gradient in the backward pass, and the
model is fine-tuned with a plain PyTorch loop. The per-head range scalers are ordinary
parameters, trained with everything else.

    PYTHONPATH=build/python /usr/bin/python3 examples/python/nanogpt_gaincell.py --steps 20

Prints the loss of each step (stderr: progress) and a JSON summary (stdout).
"""
import argparse
import json
import math
import pathlib
import sys
import time

import torch
from torch import nn
from torch.nn import functional as F

from gaincell.torch import GainCellAttention


class CausalSelfAttention(nn.Module):
    def __init__(self, n_embd, n_head):
        super().__init__()
        self.n_head = n_head
        self.c_attn = nn.Linear(n_embd, 3 * n_embd)
        self.c_proj = nn.Linear(n_embd, n_embd)
        self.core = None  # None: softmax; else a module taking q, k, v [B, H, T, D]

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        if self.core is None:
            att = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
            mask = torch.ones(T, T, dtype=torch.bool).tril()
            y = att.masked_fill(~mask, float("-inf")).softmax(-1) @ v
        else:
            # The gain-cell core takes contiguous [B, H, T, D] CPU float32 tensors.
            y = self.core(q.contiguous(), k.contiguous(), v.contiguous())
        return self.c_proj(y.transpose(1, 2).reshape(B, T, C))


class Block(nn.Module):
    def __init__(self, n_embd, n_head):
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd)
        self.attn = CausalSelfAttention(n_embd, n_head)
        self.ln_2 = nn.LayerNorm(n_embd)
        self.mlp = nn.Sequential(nn.Linear(n_embd, 4 * n_embd), nn.GELU(approximate="tanh"),
                                 nn.Linear(4 * n_embd, n_embd))

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, vocab, block_size, n_layer, n_head, n_embd):
        super().__init__()
        self.wte = nn.Embedding(vocab, n_embd)
        self.wpe = nn.Embedding(block_size, n_embd)
        self.h = nn.ModuleList(Block(n_embd, n_head) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(n_embd)
        self.apply(self._init)

    @staticmethod
    def _init(m):
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, 0.0, 0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

    def forward(self, idx, targets):
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
        for block in self.h:
            x = block(x)
        logits = self.ln_f(x) @ self.wte.weight.t()
        return F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.view(-1))


def use_gain_cell_attention(model, hw, variant=None):
    """Replaces every layer's attention core by the gain-cell simulation."""
    for layer, block in enumerate(model.h):
        a = block.attn
        head_dim = a.c_proj.in_features // a.n_head
        a.core = GainCellAttention(a.n_head, head_dim, hw=hw, layer=layer, variant=variant)


def batches(data, block_size, batch_size, gen):
    while True:
        ix = torch.randint(len(data) - block_size - 1, (batch_size,), generator=gen)
        x = torch.stack([data[i:i + block_size] for i in ix])
        y = torch.stack([data[i + 1:i + 1 + block_size] for i in ix])
        yield x, y


def train(model, params, steps, lr, batch_iter, label):
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
    losses = []
    start = time.time()
    for step in range(1, steps + 1):
        x, y = next(batch_iter)
        loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(float(loss))
        rate = step / max(time.time() - start, 1e-9)
        print(f"{label} step {step}/{steps} loss {losses[-1]:.4f} ({rate:.2f} steps/s, "
              f"ETA {(steps - step) / rate:.0f} s)", file=sys.stderr)
    return losses


@torch.no_grad()
def evaluate(model, data, block_size, batch_size, seed):
    gen = torch.Generator().manual_seed(seed)
    model.eval()
    x, y = next(batches(data, block_size, batch_size, gen))
    loss = float(model(x, y))
    model.train()
    return loss


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(pathlib.Path(__file__).resolve().parents[2] /
                                          "README.md"),
                    help="text file to learn (bytes); default: the repository's README.md")
    ap.add_argument("--pretrain-steps", type=int, default=100, help="softmax training steps")
    ap.add_argument("--steps", type=int, default=20, help="gain-cell fine-tuning steps")
    ap.add_argument("--n-layer", type=int, default=2)
    ap.add_argument("--n-head", type=int, default=2)
    ap.add_argument("--n-embd", type=int, default=64)
    ap.add_argument("--block-size", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--hw", default="paper-nonlinear", help="preset name or JSON file")
    ap.add_argument("--seed", type=int, default=1337)
    args = ap.parse_args(argv)

    torch.manual_seed(args.seed)
    data = torch.tensor(list(pathlib.Path(args.data).read_bytes()), dtype=torch.long)
    if len(data) < args.block_size + 2:
        ap.error(f"{args.data} is shorter than --block-size + 2 bytes")
    model = GPT(256, args.block_size, args.n_layer, args.n_head, args.n_embd)
    gen = torch.Generator().manual_seed(args.seed)
    it = batches(data, args.block_size, args.batch_size, gen)

    softmax_losses = train(model, model.parameters(), args.pretrain_steps, args.lr, it, "softmax")
    softmax_eval = evaluate(model, data, args.block_size, args.batch_size, args.seed + 1)

    use_gain_cell_attention(model, args.hw)
    before = evaluate(model, data, args.block_size, args.batch_size, args.seed + 1)
    gaincell_losses = train(model, model.parameters(), args.steps, args.lr, it, "gain-cell")
    after = evaluate(model, data, args.block_size, args.batch_size, args.seed + 1)

    print(json.dumps({
        "softmax_train_losses": softmax_losses,
        "softmax_eval_loss": softmax_eval,
        "gaincell_eval_loss_before_finetuning": before,
        "gaincell_train_losses": gaincell_losses,
        "gaincell_eval_loss_after_finetuning": after,
        "hw": args.hw,
        "scalers_layer0": {name: p.detach().tolist()
                           for name, p in model.h[0].attn.core.named_parameters()},
    }))


if __name__ == "__main__":
    main()
