"""gaincell: GPT-2-family language models on simulated gain-cell analog attention hardware.

The C++ simulator as a Python library (docs/python.md):

    import gaincell
    hw = gaincell.HwConfig("paper-nonlinear")          # a preset or a JSON file, as the CLI's --hw
    hw = gaincell.HwConfig.from_dict({"preset": "paper-linear", "window": 256})

    from gaincell.torch import GainCellAttention       # needs PyTorch
    core = GainCellAttention(n_head=12, head_dim=64, hw=hw)

Every invalid input raises a Python exception; errors of the C++ library (bad configuration
values, files, non-finite numbers) arrive as gaincell.Error (a ValueError) with the CLI's message.
"""
from ._core import Error, HwConfig, Model, __version__, gaincell_attention_names  # noqa: F401

__all__ = ["Error", "HwConfig", "Model", "gaincell_attention_names", "__version__"]
