"""gaincell.eval / Model.evaluate and gaincell.sweep against the CLI's `eval` and `sweep` on the
tiny committed GPT-2 (tests/fixtures/eval_tiny) and the task fixtures: the same numbers."""
import json
import os

import pytest

import gaincell
from conftest import FIXTURES, ROOT, run_cli

MODEL = FIXTURES / "eval_tiny"
DATA = FIXTURES / "eval"
VOCAB = ROOT / "data" / "vocab"


@pytest.fixture(autouse=True)
def _needs_vocabulary():
    if not (VOCAB / "encoder.json").exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"the GPT-2 vocabulary {VOCAB} is missing (CI=true requires it)")
        pytest.skip(f"the GPT-2 vocabulary {VOCAB} is absent (run scripts/setup.sh)")


def without_timing(results):
    """results[task] without the wall-clock fields, which differ from run to run."""
    return {task: {k: v for k, v in values.items() if k != "seconds"}
            for task, values in results.items()}


@pytest.mark.parametrize("weights", ["f32", "q8"])
def test_eval_equals_the_cli(weights):
    args = dict(limit=2, attention="gaincell-nonlinear", hw="paper-nonlinear", weights=weights,
                bootstrap_iters=50)
    report = gaincell.eval(MODEL, "arc_easy, lambada_openai", data_dir=DATA,
                           task_files={"wikitext": DATA / "wiki.test.raw"}, vocab=VOCAB, **args)
    cli = json.loads(run_cli("eval", "--model", MODEL, "--tasks", "arc_easy,lambada_openai",
                             "--data-dir", DATA, "--task-file",
                             f"wikitext={DATA / 'wiki.test.raw'}", "--limit", 2, "--attention",
                             "gaincell-nonlinear", "--hw", "paper-nonlinear", "--weights",
                             weights, "--bootstrap-iters", 50, "--json", "--quiet").stdout)
    assert list(report["results"]) == ["arc_easy", "lambada_openai", "wikitext"]
    assert without_timing(report["results"]) == without_timing(cli["results"])
    assert report["n-samples"] == cli["n-samples"]
    for key in ("attention", "weights", "hw", "noise_seed", "limit", "batch_size",
                "bootstrap_iters", "data_files"):
        assert report["config"][key] == cli["config"][key], key
    assert report["config"]["weights"] == weights


def test_model_evaluate_reuses_one_loaded_model():
    m = gaincell.Model.load(str(MODEL), vocab=str(VOCAB), weights="bf16")
    assert m.weights == "bf16"
    a = m.evaluate(["winogrande"], data_dir=str(DATA), limit=2)
    b = m.evaluate(task_files={"winogrande": str(DATA / "winogrande_validation.jsonl")}, limit=2)
    assert without_timing(a["results"]) == without_timing(b["results"])
    assert a["results"]["winogrande"]["num_docs"] == 2
    assert a["config"]["weights"] == "bf16"
    # Loaded straight into bf16: no fp32 copy of the matrices to show, train on or save.
    with pytest.raises(gaincell.Error, match="loaded with bf16 weights and no fp32 copy"):
        m.params()


def test_eval_bad_input_raises_the_cli_message():
    with pytest.raises(gaincell.Error, match="unknown task 'mmlu'"):
        gaincell.eval(MODEL, ["mmlu"], data_dir=DATA, vocab=VOCAB)
    with pytest.raises(gaincell.Error, match="limit"):
        gaincell.eval(MODEL, ["piqa"], data_dir=DATA, limit=0, vocab=VOCAB)
    with pytest.raises(gaincell.Error, match="data_dir"):
        gaincell.eval(MODEL, ["piqa"], vocab=VOCAB)


SPEC = {"attention": "gaincell-nonlinear", "base": "paper-nonlinear",
        "axes": {"quantization.k.levels": [4, 8], "noise.gain_variation": [0.0, 0.1]},
        "seeds": 2, "cost": {"tokens": 64, "batch": 1},
        "evaluation": {"type": "tasks", "tasks": ["arc_easy", "lambada_openai"],
                       "data_dir": str(DATA), "vocab": str(VOCAB), "limit": 2}}


def test_sweep_equals_the_cli(tmp_path):
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(SPEC))
    cli = json.loads(run_cli("sweep", "--model", MODEL, "--spec", spec_file, "--out",
                             tmp_path / "cli", "--weights", "q8", "--quiet").stdout)
    py = gaincell.sweep(MODEL, SPEC, tmp_path / "py", weights="q8")
    assert (py["points"], py["ran"], py["failed"]) == (cli["points"], cli["ran"], cli["failed"])
    assert py["points"] == 4 and py["failed"] == 0
    lines = [json.loads(x) for x in (tmp_path / "cli" / "results.jsonl").read_text().splitlines()]
    strip = [{k: v for k, v in line.items() if k != "timing"} for line in lines]
    assert [{k: v for k, v in r.items() if k != "timing"} for r in py["results"]] == strip
    assert all(r["weights"] == "q8" for r in py["results"])
    assert (tmp_path / "py" / "summary.csv").read_text() == \
        (tmp_path / "cli" / "summary.csv").read_text()
    # A second call on the same OUT needs resume=True, which then runs nothing.
    with pytest.raises(gaincell.Error, match="--resume"):
        gaincell.sweep(MODEL, SPEC, tmp_path / "py", weights="q8")
    again = gaincell.sweep(MODEL, SPEC, tmp_path / "py", weights="q8", resume=True)
    assert (again["ran"], again["resumed"]) == (0, 4)


def test_sweep_with_worker_processes_equals_one_process(tmp_path):
    one = gaincell.sweep(MODEL, SPEC, tmp_path / "one", limit=1, seeds=1)
    two = gaincell.sweep(MODEL, SPEC, tmp_path / "two", limit=1, seeds=1, jobs=2)
    strip = [{k: v for k, v in r.items() if k != "timing"} for r in one["results"]]
    assert sorted(strip, key=lambda r: r["point"]) == \
        sorted(({k: v for k, v in r.items() if k != "timing"} for r in two["results"]),
               key=lambda r: r["point"])
