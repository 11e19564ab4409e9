"""gaincell.torch: the autograd operation and the module against independent references.

- tests/fixtures/gaincell_reference.bin: the PyTorch reference written from the spec
  (tests/reference/gaincell_reference.py; the C++ kernel matches it to 1e-5 in
  test_gaincell_attention_reference.cpp), forward and surrogate gradients;
- the C++ plain loop-level reference kernel (double accumulation), through the library (1e-6);
- finite differences of the surrogate model (the linear cell without quantisers, whose exact
  gradient the surrogate is);
- bad input raises clear exceptions.
"""
import json
import struct

import numpy as np
import pytest
import torch

import gaincell
from gaincell import _core
from gaincell.torch import GainCellAttention, gain_cell_attention
from conftest import FIXTURES

SCALERS = ("q", "k", "v", "output")


def read_reference_cases():
    blob = (FIXTURES / "gaincell_reference.bin").read_bytes()
    assert blob[:8] == b"GCREF001"
    (n,) = struct.unpack("<Q", blob[8:16])
    header = json.loads(blob[16:16 + n])
    data = np.frombuffer(blob[16 + n:], dtype="<f4")
    cases = []
    for c in header["cases"]:
        arrays = {k: data[v["offset"]:v["offset"] + v["count"]].astype(np.float32)
                  for k, v in c["arrays"].items()}
        cases.append((c, arrays))
    return cases


CASES = read_reference_cases()


def hw_of(case):
    """The configuration test_gaincell_attention_reference.cpp builds for a fixture case."""
    quant = case["quant"]
    qz = {"enabled": quant}
    return gaincell.HwConfig.from_dict({
        "preset": "paper-linear" if case["cell"] == "linear" else "paper-nonlinear",
        "window": case["window"],
        "leakage": {"enabled": True, "lambda_per_token": case["lambda"]},
        "quantization": {"q": qz, "k": qz, "v": qz, "out": qz},
    })


def case_tensors(case, arrays):
    B, H, T, D = case["shape"]
    t = {n: torch.from_numpy(arrays[n].reshape(B, H, T, D)).requires_grad_(True)
         for n in ("q", "k", "v")}
    sc = np.stack([np.stack([arrays[f"scaler.{s}_a"], arrays[f"scaler.{s}_b"]])
                   for s in SCALERS]).astype(np.float32)
    t["scalers"] = torch.from_numpy(sc).requires_grad_(True)
    t["dy"] = torch.from_numpy(arrays["dy"].reshape(B, H, T, D))
    return t


def max_rel_err(got, ref):
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    return float(np.max(np.abs(got - ref)) / max(np.max(np.abs(ref)), 1e-30))


@pytest.mark.parametrize("case,arrays", CASES, ids=[c["name"] for c, _ in CASES])
def test_op_matches_the_spec_reference_fixture(case, arrays):
    t = case_tensors(case, arrays)
    y = gain_cell_attention(t["q"], t["k"], t["v"], t["scalers"], hw_of(case))
    assert max_rel_err(y.detach(), arrays["y"].reshape(y.shape)) < 1e-5
    (y * t["dy"]).sum().backward()
    for n in ("q", "k", "v"):
        assert max_rel_err(t[n].grad, arrays["d" + n].reshape(t[n].shape)) < 1e-5, n
    for i, s in enumerate(SCALERS):
        assert max_rel_err(t["scalers"].grad[i, 0], arrays[f"grad.{s}_a"]) < 1e-5, s + ".a"
        assert max_rel_err(t["scalers"].grad[i, 1], arrays[f"grad.{s}_b"]) < 1e-5, s + ".b"


@pytest.mark.parametrize("case,arrays", CASES, ids=[c["name"] for c, _ in CASES])
def test_op_matches_the_cpp_loop_reference(case, arrays):
    """The op (fast kernel, through torch) against the C++ loop-level reference kernel run by
    the library on the same inputs: forward 1e-6, gradients 1e-5."""
    t = case_tensors(case, arrays)
    B, H, T, D = case["shape"]
    hw = hw_of(case)
    y = gain_cell_attention(t["q"], t["k"], t["v"], t["scalers"], hw)
    (y * t["dy"]).sum().backward()
    ref = _core.AttentionCore(hw, H, D, 0, "", use_reference_kernel=True)
    np_in = [t[n].detach().numpy() for n in ("q", "k", "v")]
    y_ref, call = ref.forward(*np_in, t["scalers"].detach().numpy(), True)
    assert max_rel_err(y.detach(), y_ref) < 1e-6
    grads = call.backward(*np_in, t["dy"].numpy())
    for got, want, n in zip((t["q"].grad, t["k"].grad, t["v"].grad, t["scalers"].grad), grads,
                            ("dq", "dk", "dv", "dscalers")):
        assert max_rel_err(got, want) < 1e-5, n


def surrogate_case(seed=3, B=1, H=2, T=20, D=4):
    """A linear cell without quantisers and with saturations out of reach: the surrogate gradient
    is then the exact gradient of the forward, which finite differences can check."""
    hw = gaincell.HwConfig.from_dict({
        "preset": "paper-linear", "window": 64, "s_sat": 1e4, "a_sat": 1e4,
        "leakage": {"enabled": True, "lambda_per_token": 0.01},
        "quantization": {n: {"enabled": False} for n in ("q", "k", "v", "out")}})
    g = torch.Generator().manual_seed(seed)
    # Scaled inputs stay well inside the clamps [0, 1] (q) and [0, 0.9] (k, v).
    q = (0.5 + 0.3 * (torch.rand(B, H, T, D, generator=g) - 0.5)).requires_grad_(True)
    k = (0.45 + 0.3 * (torch.rand(B, H, T, D, generator=g) - 0.5)).requires_grad_(True)
    v = (0.45 + 0.3 * (torch.rand(B, H, T, D, generator=g) - 0.5)).requires_grad_(True)
    sc = torch.tensor([[[1.0] * H, [0.0] * H], [[1.1] * H, [-0.04] * H],
                       [[0.9] * H, [0.05] * H], [[1.3] * H, [0.1] * H]]).requires_grad_(True)
    w = torch.randn(B, H, T, D, generator=g)
    return hw, q, k, v, sc, w


def test_gradients_match_finite_differences_of_the_surrogate():
    hw, q, k, v, sc, w = surrogate_case()
    loss = (gain_cell_attention(q, k, v, sc, hw) * w).sum()
    loss.backward()

    def f(q_, k_, v_, sc_):
        with torch.no_grad():
            return float((gain_cell_attention(q_, k_, v_, sc_, hw).double() * w.double()).sum())

    rng = np.random.default_rng(0)
    checked = 0
    for name, x in (("q", q), ("k", k), ("v", v), ("scalers", sc)):
        flat = x.detach().view(-1)
        for i in rng.choice(flat.numel(), size=min(12, flat.numel()), replace=False):
            eps = 1e-2 * max(abs(float(flat[i])), 0.1)
            args = {"q": q.detach().clone(), "k": k.detach().clone(), "v": v.detach().clone(),
                    "scalers": sc.detach().clone()}
            args[name].view(-1)[i] += eps
            up = f(args["q"], args["k"], args["v"], args["scalers"])
            args[name].view(-1)[i] -= 2 * eps
            down = f(args["q"], args["k"], args["v"], args["scalers"])
            numeric = (up - down) / (2 * eps)
            analytic = float(x.grad.view(-1)[i])
            assert abs(numeric - analytic) <= 2e-3 * max(1.0, abs(numeric)), (name, i, numeric,
                                                                              analytic)
            checked += 1
    assert checked == 48


def test_module_owns_scalers_and_matches_the_function():
    hw = gaincell.HwConfig("paper-nonlinear")
    m = GainCellAttention(n_head=2, head_dim=4, hw=hw)
    names = dict(m.named_parameters())
    assert set(names) == {f"{s}_scaler.{p}" for s in SCALERS for p in "ab"}
    assert float(m.k_scaler.b[0]) == pytest.approx(0.45)
    assert m.variant == "gaincell-nonlinear"
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, 2, 10, 4, generator=g, requires_grad=True) for _ in range(3))
    y = m(q, k, v)
    y2 = gain_cell_attention(q, k, v, m.scalers().detach(), hw)
    assert torch.equal(y, y2)
    y.square().sum().backward()
    for p in m.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all()
    assert float(m.output_scaler.a.grad.abs().sum()) > 0
    # Statistics of the scaler outputs (spec §5.1): the q scaler's mean is a x + b's mean.
    mean, std = m.last_statistics
    assert mean.shape == (4, 2)
    assert float(mean[0, 1]) == pytest.approx(float(q[:, 1].mean()), abs=1e-5)
    m.record_targets = True
    m(q, k, v)
    assert float(m.q_scaler.target_mean[1]) == pytest.approx(0.1 * float(q[:, 1].mean()),
                                                            abs=1e-6)


def test_eval_forward_without_grad_equals_training_forward():
    m = GainCellAttention(n_head=3, head_dim=8, hw="paper-linear")
    q, k, v = (torch.randn(1, 3, 70, 8) for _ in range(3))
    with torch.no_grad():
        y_eval = m(q, k, v)
    y_train = m(q.requires_grad_(True), k, v)
    assert torch.equal(y_eval, y_train.detach())


# ----------------------------------------------------------------------------- bad input

def good_inputs(B=1, H=2, T=8, D=4):
    q, k, v = (torch.rand(B, H, T, D) for _ in range(3))
    sc = GainCellAttention(H, D).scalers().detach()
    return q, k, v, sc


def test_wrong_shapes_raise():
    q, k, v, sc = good_inputs()
    with pytest.raises(ValueError, match="same shape"):
        gain_cell_attention(q, k[:, :, :5].contiguous(), v, sc)
    with pytest.raises(ValueError, match="4 dimensions"):
        gain_cell_attention(q[0], k[0], v[0], sc)
    with pytest.raises(ValueError, match=r"scalers must be \[4, 2, H=2\]"):
        gain_cell_attention(q, k, v, sc[:3])
    m = GainCellAttention(n_head=3, head_dim=4)
    with pytest.raises(ValueError, match=r"H=3"):
        m(q, k, v)
    with pytest.raises(ValueError, match="B >= 1 and T >= 1"):
        gain_cell_attention(q[:, :, :0], k[:, :, :0], v[:, :, :0], sc)


def test_wrong_dtypes_raise():
    q, k, v, sc = good_inputs()
    with pytest.raises(TypeError, match="float32, got torch.float64"):
        gain_cell_attention(q.double(), k, v, sc)
    with pytest.raises(TypeError, match="must be float32"):
        gain_cell_attention(q, k, v.half(), sc)
    with pytest.raises(TypeError, match="torch.Tensor"):
        gain_cell_attention(q.numpy(), k, v, sc)


def test_non_contiguous_raises():
    q, k, v, sc = good_inputs(T=4, D=4)
    with pytest.raises(ValueError, match="contiguous"):
        gain_cell_attention(q.transpose(2, 3), k, v, sc)
    with pytest.raises(ValueError, match="contiguous"):
        gain_cell_attention(q, k, v, sc.transpose(0, 1).contiguous().transpose(0, 1))


def test_non_cpu_tensors_raise():
    q, k, v, sc = good_inputs()
    with pytest.raises(ValueError, match="on device 'meta'.*CPU"):
        gain_cell_attention(q.to("meta"), k, v, sc)
    if torch.cuda.is_available():
        with pytest.raises(ValueError, match="on device 'cuda"):
            gain_cell_attention(q.cuda(), k, v, sc)


def test_non_finite_values_raise():
    q, k, v, sc = good_inputs()
    q[0, 0, 3, 1] = float("nan")
    with pytest.raises(gaincell.Error, match="non-finite value in q"):
        gain_cell_attention(q, k, v, sc)
    q, k, v, sc = good_inputs()
    sc[0, 0, 1] = float("inf")
    with pytest.raises(ValueError, match="scalers: non-finite"):
        gain_cell_attention(q, k, v, sc)


def test_invalid_configurations_raise():
    q, k, v, sc = good_inputs()
    with pytest.raises(gaincell.Error, match="window"):
        gain_cell_attention(q, k, v, sc, {"preset": "paper-nonlinear", "window": 0})
    with pytest.raises(gaincell.Error, match="neither a preset"):
        GainCellAttention(2, 4, hw="paper-nonlinearr")
    with pytest.raises(TypeError, match="hw must be"):
        GainCellAttention(2, 4, hw=42)
    with pytest.raises(ValueError, match="not a gain-cell attention variant"):
        GainCellAttention(2, 4, variant="softmax")
    with pytest.raises(ValueError, match="n_head and head_dim"):
        GainCellAttention(0, 4)
    # Leakage variation runs in the whole-sequence path now (issue 13); a negative one is invalid.
    noisy = {"preset": "paper-nonlinear", "noise": {"leakage_variation": -0.1}}
    with pytest.raises(gaincell.Error, match="leakage_variation"):
        gain_cell_attention(q, k, v, sc, noisy)


def test_numpy_level_core_checks_arrays():
    core = _core.AttentionCore(gaincell.HwConfig(), 2, 4)
    q = np.zeros((1, 2, 8, 4), np.float32)
    sc = np.ones((4, 2, 2), np.float32)
    with pytest.raises(TypeError, match="q must be float32"):
        core.forward(q.astype(np.float64), q, q, sc)
    with pytest.raises(ValueError, match=r"k must have shape \(1, 2, 8, 4\)"):
        core.forward(q, q[:, :, :4], q, sc)
    with pytest.raises(ValueError, match="C-contiguous"):
        core.forward(np.asfortranarray(q), q, q, sc)
    y, call = core.forward(q, q, q, sc)
    with pytest.raises(ValueError, match="grad_output must have shape"):
        call.backward(q, q, q, q[:, :1])


# ----------------------------------------------------------------- grouped-query attention

def spec_reference():
    """tests/reference/gaincell_reference.py (the PyTorch reference written from the spec),
    imported without its float64 default dtype leaking into the other tests."""
    previous = torch.get_default_dtype()
    import gaincell_reference
    torch.set_default_dtype(previous)
    return gaincell_reference


def gqa_case(B=2, H=4, Hkv=2, T=12, D=8, seed=11):
    rng = np.random.default_rng(seed)
    heads = {"q": H, "k": Hkv, "v": Hkv, "output": H}
    sc = {"q_a": rng.uniform(0.6, 1.6, H), "q_b": rng.uniform(0.2, 0.4, H),
          "k_a": rng.uniform(0.5, 1.5, Hkv), "k_b": 0.45 + rng.uniform(-0.1, 0.1, Hkv),
          "v_a": rng.uniform(0.5, 1.5, Hkv), "v_b": 0.45 + rng.uniform(-0.1, 0.1, Hkv),
          "output_a": rng.uniform(0.5, 2.0, H), "output_b": rng.uniform(-0.2, 0.2, H)}
    sc = {n: x.astype(np.float32) for n, x in sc.items()}
    assert all(sc[f"{s}_a"].shape == (heads[s],) for s in SCALERS)
    arrays = {"q": rng.normal(0.0, 0.4, (B, H, T, D)), "k": rng.normal(0.0, 0.4, (B, Hkv, T, D)),
              "v": rng.normal(0.0, 0.4, (B, Hkv, T, D)), "dy": rng.normal(0.0, 1.0, (B, H, T, D))}
    return sc, {n: x.astype(np.float32) for n, x in arrays.items()}


@pytest.mark.parametrize("cell", ["linear", "nonlinear"])
def test_grouped_query_attention_matches_the_spec_reference(cell):
    """K/V with fewer heads than Q: the op (one array pair per key/value head) against the
    PyTorch spec reference run on K/V (and their scalers) repeated to the query heads, in
    float64; autograd through the repetition sums each group's gradients."""
    ref = spec_reference()
    B, H, Hkv, T, D = 2, 4, 2, 80, 8
    rep = H // Hkv
    cfg = {"cell": cell, "quant": False, "window": 64, "lambda": 0.02}  # window 64 < T = 80
    sc, a = gqa_case(B=B, H=H, Hkv=Hkv, T=T, D=D)
    flat = np.concatenate([sc[f"{s}_{p}"] for s in SCALERS for p in "ab"])
    t = {n: torch.from_numpy(a[n]).requires_grad_(True) for n in "qkv"}
    scalers = torch.from_numpy(flat).requires_grad_(True)
    y = gain_cell_attention(t["q"], t["k"], t["v"], scalers, hw_of(cfg))
    assert y.shape == (B, H, T, D)
    (y * torch.from_numpy(a["dy"])).sum().backward()

    r = {n: torch.from_numpy(a[n]).double().requires_grad_(True) for n in "qkv"}
    rsc = {n: torch.from_numpy(x).double().requires_grad_(True) for n, x in sc.items()}
    repeated = {n: (x.repeat_interleave(rep) if n[0] in "kv" else x) for n, x in rsc.items()}
    y_ref = ref.forward(r["q"], r["k"].repeat_interleave(rep, dim=1),
                        r["v"].repeat_interleave(rep, dim=1), repeated, cfg)
    (y_ref * torch.from_numpy(a["dy"]).double()).sum().backward()

    assert max_rel_err(y.detach(), y_ref.detach()) < 1e-5
    for n in "qkv":
        assert t[n].grad.shape == r[n].grad.shape
        assert max_rel_err(t[n].grad, r[n].grad) < 1e-5, n
    want = torch.cat([rsc[f"{s}_{p}"].grad for s in SCALERS for p in "ab"])
    assert max_rel_err(scalers.grad, want) < 1e-5


def test_grouped_query_module_owns_per_kv_head_scalers():
    hw = gaincell.HwConfig("paper-nonlinear")
    m = GainCellAttention(n_head=4, head_dim=8, hw=hw, n_kv_head=2)
    assert m.q_scaler.a.shape == (4,) and m.output_scaler.b.shape == (4,)
    assert m.k_scaler.a.shape == (2,) and m.v_scaler.b.shape == (2,)
    assert m.scalers().shape == (24,)
    _, a = gqa_case()
    q, k, v = (torch.from_numpy(a[n]).requires_grad_(True) for n in "qkv")
    y = m(q, k, v)
    assert torch.equal(y, gain_cell_attention(q, k, v, m.scalers().detach(), hw))
    y.square().sum().backward()
    assert m.k_scaler.a.grad.shape == (2,) and float(m.k_scaler.a.grad.abs().sum()) > 0
    assert k.grad.shape == (2, 2, 12, 8)
    # Statistics per scaler: q and output per query head, k and v per key/value head.
    mean, std = m.last_statistics
    assert [tuple(x.shape) for x in mean] == [(4,), (2,), (2,), (4,)]
    # k head 1 is read by query heads 2 and 3: its statistic is of a_k k + b_k over that head.
    want = float(m.k_scaler.a[1]) * float(k[:, 1].mean()) + float(m.k_scaler.b[1])
    assert float(mean[1][1]) == pytest.approx(want, abs=1e-5)
    m.record_targets = True
    m(q, k, v)
    assert float(m.k_scaler.target_mean[1]) == pytest.approx(0.1 * want, abs=1e-6)


def test_grouped_query_bad_shapes_raise():
    _, a = gqa_case()
    q, k, v = (torch.from_numpy(a[n]) for n in "qkv")
    m = GainCellAttention(n_head=4, head_dim=8, n_kv_head=2)
    sc = m.scalers().detach()
    with pytest.raises(ValueError, match="must divide q's 4"):
        gain_cell_attention(q, k[:, :1].repeat(1, 3, 1, 1).contiguous(), v, sc)
    with pytest.raises(ValueError, match=r"scalers must be \[4 \(H \+ Hkv\) = 24\]"):
        gain_cell_attention(q, k, v, torch.ones(4, 2, 4))
    with pytest.raises(ValueError, match=r"k and v must be \[B, Hkv=2"):
        m(q, q, q)
    with pytest.raises(ValueError, match="same shape"):
        m(q, k, v[:, :, :5].contiguous())
    with pytest.raises(ValueError, match="n_kv_head .3. must divide n_head .4."):
        GainCellAttention(n_head=4, head_dim=8, n_kv_head=3)
    core = _core.AttentionCore(gaincell.HwConfig(), 4, 8, n_kv_head=2)
    with pytest.raises(ValueError, match="one flat vector of 24"):
        core.forward(a["q"], a["k"], a["v"], np.ones((4, 2, 4), np.float32))
    with pytest.raises(ValueError, match=r"k must have shape \(2, 2, 12, 8\)"):
        core.forward(a["q"], a["q"], a["v"], np.ones(24, np.float32))
