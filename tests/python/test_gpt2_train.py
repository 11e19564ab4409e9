"""A PyTorch GPT-2 with its attention replaced by gaincell.torch.GainCellAttention
(tests/reference/gpt2_gaincell_torch.py) gives the loss and parameter gradients of
`gaincell train`'s first step on the same weights and batch.

The CLI's gradients are read back from its checkpoint: after one AdamW step the first moment is
m = (1 - beta1) g exactly (gradient clipping off), stored in training_state.bin. The batch is
pinned by a token file of exactly T + 1 tokens, whose only window every row samples.
"""
import json
import struct

import numpy as np
import pytest
import torch

import gaincell
from conftest import FIXTURES, run_cli
from gpt2_gaincell_torch import load_model_dir

B, T = 2, 16
BETA1 = np.float32(0.9)


def write_tokens(dir_, tokens):
    dir_.mkdir(parents=True, exist_ok=True)
    np.asarray(tokens, dtype="<u2").tofile(dir_ / "train.bin")


def read_first_moment(path):
    blob = path.read_bytes()
    assert blob[:8] == b"GCTRAIN1"
    step, n = struct.unpack("<qQ", blob[16:32])
    assert step == 1
    return np.frombuffer(blob[32:32 + 4 * n], dtype="<f4")


def cli_first_step(tmp_path, attention, hw):
    rng = np.random.default_rng(7)
    tokens = rng.integers(0, 101, T + 1)
    write_tokens(tmp_path / "data", tokens)
    out = tmp_path / "out"
    proc = run_cli("train", "--init", FIXTURES / "gpt2_tiny", "--data", tmp_path / "data",
                   "--attention", attention, "--hw", hw, "--steps", 1, "--batch-size", B,
                   "--seq-len", T, "--grad-clip", 0, "--warmup", 0, "--log-interval", 0,
                   "--out", out, "--json")
    loss = json.loads(proc.stdout.strip().splitlines()[-1])["final_loss"]
    g = read_first_moment(out / "training_state.bin") / (np.float32(1) - BETA1)
    return tokens, loss, g


@pytest.mark.parametrize("attention,hw", [("gaincell-nonlinear", "ideal"),
                                          ("gaincell-linear", "ideal")])
def test_torch_gpt2_with_the_module_matches_gaincell_train(tmp_path, attention, hw):
    tokens, cli_loss, cli_grads = cli_first_step(tmp_path, attention, hw)
    # The same model through the library: parameter offsets, and the trainer's loss/gradients.
    lib = gaincell.Model.load(str(FIXTURES / "gpt2_tiny"), attention=attention, hw=hw)
    params = lib.params()
    x = np.tile(tokens[:T], (B, 1))
    y = np.tile(tokens[1:], (B, 1))
    lib_loss, lib_grads = lib.loss_and_grads(x, y)
    assert lib_loss == pytest.approx(cli_loss, rel=1e-6)

    model = load_model_dir(FIXTURES / "gpt2_tiny", hw=gaincell.HwConfig(hw),
                           variant=attention)
    _, loss = model(torch.from_numpy(x).long(), torch.from_numpy(y).long())
    loss.backward()
    assert float(loss) == pytest.approx(cli_loss, rel=1e-5, abs=1e-6)

    checked = 0
    for name, p in model.named_parameters():
        gname = model.gaincell_name(name)
        start = offset_of(params, gname)
        cli_g = cli_grads[start:start + p.numel()]
        got = p.grad.detach().numpy().ravel()
        scale = max(float(np.abs(cli_g).max()), 1.0)
        assert np.abs(got - cli_g).max() <= 1e-5 * scale, gname
        np.testing.assert_allclose(lib_grads[gname].ravel(), cli_g, rtol=0, atol=1e-6 * scale)
        checked += 1
    assert checked == len(params) - 2 * 8  # all but the 8 target buffers of each layer
    # The scalers did receive gradient (the gain-cell path is live).
    assert np.abs(lib_grads["h.0.attn.output_scaler.a"]).max() > 0


def offset_of(params, name):
    """Offset of a parameter in the model's flat storage (the views share one buffer)."""
    base = min(a.__array_interface__["data"][0] for a in params.values())
    return (params[name].__array_interface__["data"][0] - base) // 4
