"""pytest set-up of the Python tests: the package from the build folder, paths, the CLI.

Run from the repository root after building (scripts/test.sh does this):
    PYTHONPATH=build/python /usr/bin/python3 -m pytest tests/python
GAINCELL_BUILD_DIR names another build folder (default: build).
"""
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
BUILD = pathlib.Path(os.environ.get("GAINCELL_BUILD_DIR", ROOT / "build")).resolve()
FIXTURES = ROOT / "tests" / "fixtures"
CLI = BUILD / "gaincell"

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
