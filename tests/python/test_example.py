"""examples/python/nanogpt_gaincell.py runs a few steps at a small size."""
import json
import math
import os
import subprocess
import sys

from conftest import BUILD, ROOT


def test_nanogpt_example_fine_tunes_with_gain_cell_attention():
    args = ["--pretrain-steps", "30", "--steps", "4", "--n-layer", "1", "--n-head", "2",
            "--n-embd", "32", "--block-size", "32", "--batch-size", "4", "--seed", "3",
            "--lr", "3e-3"]
    # One thread: at this size, torch's thread pool only waits on the other cores' load.
    env = {**os.environ, "PYTHONPATH": str(BUILD / "python"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "examples/python/nanogpt_gaincell.py"),
                           *args], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    assert len(r["softmax_train_losses"]) == 30 and len(r["gaincell_train_losses"]) == 4
    values = r["softmax_train_losses"] + r["gaincell_train_losses"] + [
        r["gaincell_eval_loss_before_finetuning"], r["gaincell_eval_loss_after_finetuning"]]
    assert all(math.isfinite(x) for x in values)
    # The softmax model learned something (uniform over 256 bytes is ln 256 = 5.55).
    assert r["softmax_train_losses"][-1] < r["softmax_train_losses"][0] - 0.5
    # The scalers are trained parameters: AdamW moved them off their initial values.
    sc = r["scalers_layer0"]
    assert any(abs(a - 1.0) > 1e-4 for a in sc["q_scaler.a"] + sc["output_scaler.a"])
    assert "gain-cell step 4/4" in proc.stderr
