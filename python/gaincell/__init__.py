"""gaincell: GPT-2-family language models on simulated gain-cell analog attention hardware.

The C++ simulator as a Python library (docs/python.md):

    import gaincell
    hw = gaincell.HwConfig("paper-nonlinear")          # a preset or a JSON file, as the CLI's --hw
    hw = gaincell.HwConfig.from_dict({"preset": "paper-linear", "window": 256})

    from gaincell.torch import GainCellAttention       # needs PyTorch
    core = GainCellAttention(n_head=12, head_dim=64, hw=hw)

    report = gaincell.eval("model_dir", ["piqa"], data_dir="eval-data", limit=100)
    outcome = gaincell.sweep("model_dir", "examples/sweeps/paper-bits.json", "out",
                             tokens="val.bin")

Every invalid input raises a Python exception; errors of the C++ library (bad configuration
values, files, non-finite numbers) arrive as gaincell.Error (a ValueError) with the CLI's message.
"""
import os
import pathlib
import shutil

# libgomp reads OMP_WAIT_POLICY when it loads, so it is set before the extension loads it: spinning
# OpenMP threads take the cores from OpenBLAS's own threads (the CLI sets the same default,
# core/blas.h configure_threads_and_restart). A user's own setting is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "passive")
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")  # idle OpenBLAS workers sleep, as in the CLI

from ._core import Error, HwConfig, Model, __version__, gaincell_attention_names  # noqa: F401,E402
from ._core import _sweep  # noqa: E402

__all__ = ["Error", "HwConfig", "Model", "eval", "sweep", "gaincell_attention_names",
           "__version__"]


def eval(model, tasks=(), data_dir="", task_files=None, limit=None, batch_size=8,  # noqa: A001
         attention=None, window=None, hw=None, weights="f32", bootstrap_iters=100000,
         share_context=True, vocab=""):
    """`gaincell eval --json`: loads the model directory as the CLI does (attention, window, hw
    and weights override its config) and scores lm-eval tasks with the harness's rules.

    tasks: names (or a comma-separated str) whose files are looked for in data_dir;
    task_files: {task: path}. Returns the CLI's JSON report as a dict: results[task][metric],
    results[task][metric + "_stderr"], n-samples and config (model, attention, hw, weights, ...).
    """
    if isinstance(tasks, str):
        tasks = [t.strip() for t in tasks.split(",") if t.strip()]
    m = Model.load(str(model), attention=attention, window=window, hw=hw, weights=weights,
                   vocab=str(vocab))
    report = m.evaluate(list(tasks), data_dir=str(data_dir),
                        task_files={k: str(v) for k, v in (task_files or {}).items()},
                        limit=limit, batch_size=batch_size, bootstrap_iters=bootstrap_iters,
                        share_context=share_context)
    report["config"]["model"] = str(model)
    return report


def _cli_executable():
    """The gaincell CLI the sweep's worker processes run: $GAINCELL_CLI, the CLI of the build
    folder this package was built in, or gaincell on PATH."""
    candidates = [os.environ.get("GAINCELL_CLI"),
                  pathlib.Path(__file__).resolve().parents[2] / "gaincell",
                  shutil.which("gaincell")]
    for c in candidates:
        if c and pathlib.Path(c).is_file() and os.access(c, os.X_OK):
            return str(c)
    raise Error("gaincell.sweep(jobs > 1) runs points in `gaincell sweep --worker` processes: "
                "set GAINCELL_CLI to the gaincell executable or pass executable=")


def sweep(model, spec, out, jobs=1, resume=False, tokens=None, train_tokens=None, limit=None,
          seeds=None, weights=None, executable=None, quiet=True):
    """`gaincell sweep --model MODEL --spec SPEC --out OUT` (docs/sweeps.md).

    spec: a sweep file path or a dict in the sweep-file format (relative paths in a dict resolve
    against the working directory). tokens, train_tokens, limit, seeds and weights override the
    file as the CLI's options do. Writes OUT as the CLI does and returns {"points", "ran",
    "resumed", "failed", "out", "results"}: results are the lines of OUT/results.jsonl.
    """
    if jobs > 1 and executable is None:
        executable = _cli_executable()
    spec_arg = spec if isinstance(spec, dict) else str(spec)
    return _sweep(str(model), spec_arg, str(out), jobs=jobs, resume=resume,
                  tokens=None if tokens is None else str(tokens),
                  train_tokens=None if train_tokens is None else str(train_tokens),
                  limit=limit, seeds=seeds, weights=weights,
                  executable=str(executable or ""), quiet=quiet)
