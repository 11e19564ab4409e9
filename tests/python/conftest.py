"""pytest set-up of the Python tests: the package from the build folder, paths, the CLI.

Run from the repository root after building (scripts/test.sh does this):
    PYTHONPATH=build/python /usr/bin/python3 -m pytest tests/python
GAINCELL_BUILD_DIR names another build folder (default: build).
"""
import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
BUILD = pathlib.Path(os.environ.get("GAINCELL_BUILD_DIR", ROOT / "build")).resolve()
FIXTURES = ROOT / "tests" / "fixtures"
CLI = BUILD / "gaincell"


def _use_the_cli_openblas_core():
    """The CLI asks OpenBLAS for its AVX-512/AVX2 kernels where OpenBLAS falls back to SSE3 on a
    CPU it does not know (src/gaincell/core/blas.h, better_openblas_core). The tests compare the
    CLI's results exactly with the module's, so the module (loaded after this) must use the same
    kernels: the last "Core:" line OpenBLAS prints in the CLI is the one it computes with."""
    if "OPENBLAS_CORETYPE" in os.environ or not CLI.exists():
        return
    proc = subprocess.run([str(CLI), "--version"], capture_output=True, text=True,
                          env={**os.environ, "OPENBLAS_VERBOSE": "2"})
    cores = re.findall(r"Core: (\w+)", proc.stdout + proc.stderr)
    if cores:
        os.environ["OPENBLAS_CORETYPE"] = cores[-1]


_use_the_cli_openblas_core()
if str(BUILD / "python") not in sys.path:
    sys.path.insert(0, str(BUILD / "python"))
if str(ROOT / "tests" / "reference") not in sys.path:
    sys.path.insert(0, str(ROOT / "tests" / "reference"))


def run_cli(*args, check=True):
    """Runs the gaincell CLI; returns the CompletedProcess (text mode)."""
    if not CLI.exists():
        pytest.fail(f"the CLI {CLI} is not built")
    proc = subprocess.run([str(CLI), *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS",
                                                                               "2")})
    if check and proc.returncode != 0:
        pytest.fail(f"gaincell {' '.join(map(str, args))} failed ({proc.returncode}):\n"
                    f"{proc.stderr}")
    return proc
