"""Gain-cell attention as a PyTorch operation and module (imported only when torch is present).

gain_cell_attention(q, k, v, scalers, hw) is a torch.autograd.Function whose forward is the
simulator's whole-sequence kernel (the same C++ code `gaincell train` runs) and whose backward is
the same surrogate gradient (spec §4). GainCellAttention is an nn.Module that owns the per-head
range scalers and replaces the core of a causal self-attention, after the q/k/v projections:

    y = F.scaled_dot_product_attention(q, k, v, is_causal=True)    # before
    y = self.core(q.contiguous(), k.contiguous(), v.contiguous())  # after: [B, H, T, D] each

Tensors must be CPU float32, C-contiguous, q [B, H, T, D] and k, v [B, Hkv, T, D]; they cross
into C++ without copies. Grouped-query attention (Llama, Mistral, Qwen2): k and v have Hkv heads
(Hkv divides H, query head h reads key/value head h // (H // Hkv)), one K/V array pair per
key/value head; do not repeat them to H heads. The scalers are then the flat vector
(q.a, q.b [H], k.a, k.b, v.a, v.b [Hkv], output.a, output.b [H]); with Hkv == H, [4, 2, H].
"""
import collections
import json

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from . import _core
from ._core import HwConfig

SCALERS = ("q", "k", "v", "output")

__all__ = ["GainCellAttention", "gain_cell_attention", "as_hw_config", "scaler_shape", "SCALERS"]


def as_hw_config(hw):
    """HwConfig from an HwConfig, a preset name or JSON file path (str), or a dict."""
    if hw is None:
        return HwConfig("paper-nonlinear")
    if isinstance(hw, HwConfig):
        return hw
    if isinstance(hw, str):
        return HwConfig(hw)
    if isinstance(hw, dict):
        return HwConfig.from_dict(hw)
    raise TypeError("hw must be a gaincell.HwConfig, a preset name, a JSON file path or a dict, "
                    "got " + type(hw).__name__)


def _check_tensor(t, name, ndim):
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.device.type != "cpu":
        raise ValueError(f"{name} is on device '{t.device}': gaincell simulates on the CPU "
                         "(move it with .cpu())")
    if t.layout != torch.strided:
        raise ValueError(f"{name} must be a dense (strided) tensor, got layout {t.layout}")
    if t.dtype != torch.float32:
        raise TypeError(f"{name} must be float32, got {t.dtype}")
    if t.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(t.shape)}")
    if not t.is_contiguous():
        raise ValueError(f"{name} must be contiguous (call .contiguous(); e.g. q.transpose(1, 2) "
                         "of a [B, T, H, D] tensor is not)")


def _numpy(t):
    # Shares memory with t (no copy).
    return t.detach().numpy()


class _GainCellAttentionFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, scalers, core, on_call):
        keep = any(ctx.needs_input_grad[:4])
        out, call = core.forward(_numpy(q), _numpy(k), _numpy(v), _numpy(scalers), keep)
        ctx.call = call
        ctx.save_for_backward(q, k, v)
        if on_call is not None:
            on_call(call, keep)
        return torch.from_numpy(out)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        q, k, v = ctx.saved_tensors
        grad_out = grad_out.to(torch.float32).contiguous()
        dq, dk, dv, dscalers = ctx.call.backward(_numpy(q), _numpy(k), _numpy(v),
                                                 _numpy(grad_out))
        return (torch.from_numpy(dq), torch.from_numpy(dk), torch.from_numpy(dv),
                torch.from_numpy(dscalers), None, None)


# AttentionCore objects (the validated configuration and cell tables) by configuration and shape,
# so the functional form does not rebuild them on every call.
_CORES = collections.OrderedDict()
_CORE_CACHE_SIZE = 32


def _core_for(hw, n_head, head_dim, layer, variant, n_kv_head):
    key = (json.dumps(hw.to_dict(), sort_keys=True), n_head, head_dim, layer, variant or "",
           n_kv_head)
    core = _CORES.get(key)
    if core is None:
        core = _core.AttentionCore(hw, n_head, head_dim, layer, variant or "",
                                   n_kv_head=n_kv_head)
        _CORES[key] = core
        if len(_CORES) > _CORE_CACHE_SIZE:
            _CORES.popitem(last=False)
    else:
        _CORES.move_to_end(key)
    return core


def scaler_shape(n_head, n_kv_head):
    """The shape of the scalers tensor: (4, 2, H) without grouping, else (4 (H + Hkv),)."""
    if n_kv_head == n_head:
        return (4, 2, n_head)
    return (4 * (n_head + n_kv_head),)


def _apply(q, k, v, scalers, core, on_call=None):
    """on_call(call, keep): receives the C++ call object of the forward (statistics, timing)."""
    for t, n in ((q, "q"), (k, "k"), (v, "v")):
        _check_tensor(t, n, 4)
    H, Hkv, D = core.n_head, core.n_kv_head, core.head_dim
    want = scaler_shape(H, Hkv)
    # Any rank here; the shape check below names the expected layout.
    _check_tensor(scalers, "scalers", scalers.dim() if isinstance(scalers, torch.Tensor) else 0)
    if k.shape != v.shape or k.shape[0] != q.shape[0] or k.shape[2:] != q.shape[2:]:
        raise ValueError(f"q, k, v must have the same shape (k and v may have fewer heads), got "
                         f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if q.shape[1] != H or q.shape[3] != D:
        raise ValueError(f"q must be [B, H={H}, T, D={D}], got {tuple(q.shape)}")
    if k.shape[1] != Hkv:
        raise ValueError(f"k and v must be [B, Hkv={Hkv}, T, D={D}], got {tuple(k.shape)}")
    if tuple(scalers.shape) != want:
        what = ("[4, 2, H={}] (q, k, v, output x a, b)".format(H) if len(want) == 3 else
                "[4 (H + Hkv) = {}] (q.a, q.b [H={}], k.a, k.b, v.a, v.b [Hkv={}], output.a, "
                "output.b [H])".format(want[0], H, Hkv))
        raise ValueError(f"scalers must be {what}, got {tuple(scalers.shape)}")
    return _GainCellAttentionFunction.apply(q, k, v, scalers, core, on_call)


def gain_cell_attention(q, k, v, scalers, hw=None, layer=0, variant=None):
    """Causal gain-cell attention of q [B, H, T, D], k, v [B, Hkv, T, D] (CPU float32, contiguous).

    scalers: the per-head range scalers (q, k, v, output) x (a, b): [4, 2, H] float32 when
    Hkv == H, else the flat [4 (H + Hkv)] vector (q.a, q.b [H], k.a, k.b, v.a, v.b [Hkv],
    output.a, output.b [H]). The inputs enter the arrays as Qz(clamp(a x + b)) and the output
    leaves as a_o O + b_o. Grouped-query attention (Hkv < H): each key/value head is written to
    one array pair, read by the H / Hkv query heads of its group.
    hw: an HwConfig, preset name, JSON file or dict (default paper-nonlinear); the cell model
    selects the variant unless `variant` names one (e.g. "gaincell-x3"). layer seeds the noise
    streams when the configuration has noise. Differentiable in q, k, v and scalers.
    """
    hw = as_hw_config(hw)
    _check_tensor(q, "q", 4)
    _check_tensor(k, "k", 4)
    H, Hkv = q.shape[1], k.shape[1]
    if Hkv < 1 or H % Hkv != 0:
        raise ValueError(f"k and v have {Hkv} heads, which must divide q's {H}")
    core = _core_for(hw, H, q.shape[3], layer, variant, Hkv)
    return _apply(q, k, v, scalers, core)


class RangeScaler(nn.Module):
    """One digital range scaler x -> a x + b per head (spec §3.1), with the adaptation targets."""

    def __init__(self, n_head, b_init):
        super().__init__()
        self.a = nn.Parameter(torch.ones(n_head))
        self.b = nn.Parameter(torch.full((n_head,), float(b_init)))
        self.register_buffer("target_mean", torch.zeros(n_head))
        self.register_buffer("target_std", torch.zeros(n_head))


class GainCellAttention(nn.Module):
    """Drop-in causal attention core on simulated gain-cell hardware.

    forward(q, k, v) with CPU float32 contiguous tensors q [B, H, T, D], k, v [B, Hkv, T, D]
    returns [B, H, T, D] (before the output projection); n_kv_head = Hkv (default n_head) for
    grouped-query attention. Parameters: q_scaler, k_scaler, v_scaler, output_scaler (each .a
    and .b of shape [n_head], [n_kv_head] for k and v), initialised as the C++ model does (a = 1; b = 0 for q and
    output, the K/V offset for k and v), so state_dict names mirror gaincell checkpoints
    (h.{l}.attn.q_scaler.a ...). With record_targets, every training forward moves the
    target_mean/target_std buffers towards the scaler outputs' statistics (EMA 0.1, spec §5.1).
    """

    def __init__(self, n_head, head_dim, hw=None, layer=0, variant=None, n_kv_head=None):
        super().__init__()
        self.hw = as_hw_config(hw)
        n_kv_head = n_head if n_kv_head is None else n_kv_head
        self.n_head, self.n_kv_head, self.head_dim, self.layer = n_head, n_kv_head, head_dim, layer
        self._core = _core.AttentionCore(self.hw, n_head, head_dim, layer, variant or "",
                                         n_kv_head=n_kv_head)
        offsets = self.hw.to_dict()
        b_init = {"q": 0.0, "k": offsets["k_offset"], "v": offsets["v_offset"], "output": 0.0}
        for s in SCALERS:
            heads = n_kv_head if s in ("k", "v") else n_head
            self.add_module(s + "_scaler", RangeScaler(heads, b_init[s]))
        self.record_targets = False
        self.last_statistics = None  # (mean [4, H], std [4, H]) of the last training forward

    @property
    def variant(self):
        return self._core.variant

    def scalers(self):
        """The tensor the operation takes (differentiable in the parameters): [4, 2, H], or the
        flat [4 (H + Hkv)] vector under grouped-query attention."""
        if self.n_kv_head == self.n_head:
            return torch.stack([torch.stack([getattr(self, s + "_scaler").a,
                                             getattr(self, s + "_scaler").b]) for s in SCALERS])
        return torch.cat([p for s in SCALERS for p in (getattr(self, s + "_scaler").a,
                                                        getattr(self, s + "_scaler").b)])

    def _record(self, call, keep):
        stats = call.statistics() if keep else None
        if stats is None:
            return
        # [4, H] arrays, or (grouped-query attention) lists of 4 per-scaler arrays.
        mean, std = ((torch.from_numpy(x) if not isinstance(x, list) else
                      [torch.from_numpy(a) for a in x]) for x in stats)
        self.last_statistics = (mean, std)
        if self.record_targets and self.training:
            with torch.no_grad():
                for i, s in enumerate(SCALERS):
                    sc = getattr(self, s + "_scaler")
                    sc.target_mean.mul_(0.9).add_(0.1 * mean[i])
                    sc.target_std.mul_(0.9).add_(0.1 * std[i])

    def forward(self, q, k, v):
        return _apply(q, k, v, self.scalers(), self._core, self._record)

    def extra_repr(self):
        return (f"n_head={self.n_head}, n_kv_head={self.n_kv_head}, head_dim={self.head_dim}, "
                f"variant={self.variant}, "
                f"hw={self.hw.name}, layer={self.layer}")
