#!/usr/bin/env python3
"""Regenerates the measured sections of docs/reliability.md.

    /usr/bin/python3 scripts/reliability_figures.py [--fuzz-stats DIR] [--kill-record FILE]

- Fuzzing: DIR/<target>.json as written by `bash fuzz/run_fuzzers.sh --stats DIR` (executions,
  seconds, coverage, corpus), plus the committed corpus sizes and crash-* inputs of fuzz/corpus/.
- Kill and resume: FILE holds one JSON line per run of a kill test ({"test": "train" | "pipeline" |
  "sweep", "kills", "starts", "rounds", "kills_at"}), written when the tests run with
  GAINCELL_KILL_RESUME_RECORD=FILE (build/gaincell_release_tests --gtest_filter='KillResume.*').
- Bad inputs: every case below is run through build/gaincell now, and the table shows the first
  line of the error it prints and its exit status.
The text between '<!-- BEGIN name -->' and '<!-- END name -->' in the doc is replaced.
"""
import argparse
import fcntl
import glob
import json
import os
import re
import resource
import signal
import struct
import subprocess
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(ROOT, "docs", "reliability.md")
CLI = os.path.join(ROOT, "build", "gaincell")
FIXTURES = os.path.join(ROOT, "tests", "fixtures")
TINY = os.path.join(FIXTURES, "gpt2_tiny")


def plateau_text(s):
    """'yes (strict)': no new edge and no new feature in the second half of the executions;
    'yes': edges grew by at most fuzz/plateau.py's PLATEAU_GROWTH there; otherwise 'no'."""
    if s.get("plateau") is None:
        return "-"
    if s.get("strict_plateau"):
        return "yes (strict)"
    return "yes" if s["plateau"] else "**no**"


def growth_text(x):
    return "-" if x is None else "%.2f%%" % (100.0 * x)


def fuzz_table(stats_dir):
    """The per-target figures of DIR/<target>.json (fuzz/plateau.py, or run_fuzzers.sh --stats)."""
    rows = ["| target | executions | seconds | exec/s | cov (edges) | ft (features) "
            "| last cov gain | cov growth, 2nd half | ft growth, 2nd half | plateau "
            "| corpus files | corpus KB | crash inputs |",
            "|---|---:|---:|---:|---:|---:|---|---:|---:|---|---:|---:|---:|"]
    total_runs = total_s = total_bytes = plateaus = 0
    targets = sorted(os.listdir(os.path.join(ROOT, "fuzz", "corpus")))
    for target in targets:
        corpus = glob.glob(os.path.join(ROOT, "fuzz", "corpus", target, "*"))
        crashes = [c for c in corpus if os.path.basename(c).startswith("crash-")]
        size = sum(os.path.getsize(c) for c in corpus)
        total_bytes += size
        s = {}
        path = os.path.join(stats_dir, target + ".json") if stats_dir else ""
        if path and os.path.exists(path):
            with open(path) as f:
                s = json.load(f)
        runs, secs = s.get("runs", 0), s.get("seconds", 0.0)
        total_runs += runs
        total_s += secs
        plateaus += 1 if s.get("plateau") else 0

        def gain(kind):
            at, t = s.get("last_%s_gain_at" % kind), s.get("last_%s_gain_s" % kind)
            if at is None or not runs:
                return "-"
            text = "%.0f%% of executions" % (100.0 * at / runs)
            return text + (", %.0f s" % t if t is not None else "")

        rows.append("| %s | %s | %.0f | %s | %s | %s | %s | %s | %s | %s | %d | %.1f | %d |" % (
            target, runs or "-", secs, "%.0f" % (runs / secs) if secs else "-",
            s.get("coverage", "-"), s.get("features", "-"), gain("coverage"),
            growth_text(s.get("coverage_growth_second_half")),
            growth_text(s.get("features_growth_second_half")), plateau_text(s), len(corpus),
            size / 1024.0, len(crashes)))
    rows.append("| **all** | %d | %.0f | | | | | | | %d of %d | | %.0f | |" % (
        total_runs, total_s, plateaus, len(targets), total_bytes / 1024.0))
    return "\n".join(rows)


KILL_TESTS = {
    "train": "KillResume.RandomKillsLeaveCompleteCheckpointsAndBitIdenticalResults",
    "pipeline": "KillResume.PipelineKilledAtRandomEndsBitIdentical",
    "sweep": "KillResume.SweepKilledAtRandomEndsBitIdentical",
}


def kill_table(record):
    if not record or not os.path.exists(record):
        return "(no record: run the kill test with GAINCELL_KILL_RESUME_RECORD set)"
    runs = [json.loads(l) for l in open(record) if l.strip()]
    rows = ["| command | test | test runs | SIGKILLs | process starts | where the kills landed |",
            "|---|---|---:|---:|---:|---|"]
    for command, test in KILL_TESTS.items():
        mine = [r for r in runs if r.get("test", "train") == command]
        where = {}
        for r in mine:
            for at, n in r.get("kills_at", {}).items():
                where[at] = where.get(at, 0) + n
        rows.append("| `gaincell %s` | `%s` | %d | %d | %d | %s |" % (
            command, test, len(mine), sum(r["kills"] for r in mine),
            sum(r["starts"] for r in mine),
            ", ".join("%s: %d" % kv for kv in sorted(where.items())) or "-"))
    rows.append("")
    rows.append("After every SIGKILL the test checks that the output directory holds only complete "
                "files (checkpoints that verify and load, JSON that parses, whole results lines); "
                "every run ended bit-identical to its uninterrupted reference (weights, optimizer "
                "state, losses, pipeline summary without wall-clock seconds, sweep results without "
                "timing).")
    return "\n".join(rows)


def write(path, content):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb" if isinstance(content, bytes) else "w") as f:
        f.write(content)


def model_dir(d, name, config=None, weights=None):
    """A copy of the tiny test model in d/name, with its config or weights replaced."""
    with open(os.path.join(TINY, "config.json")) as f:
        cfg = json.load(f)
    cfg.update(config or {})
    write(os.path.join(d, name, "config.json"), json.dumps(cfg))
    with open(os.path.join(TINY, "model.safetensors"), "rb") as f:
        data = f.read()
    write(os.path.join(d, name, "model.safetensors"), weights(data) if weights else data)
    return os.path.join(d, name)


def set_f32(data, tensor, index, value):
    """The safetensors bytes `data` with element `index` of float32 `tensor` set to `value`."""
    n = struct.unpack("<Q", data[:8])[0]
    begin = 8 + n + json.loads(data[8:8 + n])[tensor]["data_offsets"][0] + 4 * index
    return data[:begin] + struct.pack("<f", value) + data[begin + 4:]


def token_dir(d, name, vocab):
    """train.bin and val.bin of 2000 uint16 ids below `vocab` (a headerless token directory)."""
    ids = struct.pack("<2000H", *[(i * 7) % vocab for i in range(2000)])
    write(os.path.join(d, name, "train.bin"), ids)
    write(os.path.join(d, name, "val.bin"), ids)
    return os.path.join(d, name)


BOMB = "[" * 5000


class Case:
    """One bad input: the files it needs, the command line, and the test that checks it."""

    def __init__(self, what, args, test, files=None, fsize=None, lock=None):
        self.what, self.args, self.test = what, args, test
        self.files = files or {}
        self.fsize = fsize  # RLIMIT_FSIZE of the child in bytes: a full disk
        self.lock = lock  # a directory whose lock this script holds: a concurrent process


def bad_input_cases(d):
    """Every bad input the tests try through the CLI, grouped by what is bad."""
    ck = model_dir(d, "ck")
    write(os.path.join(ck, "training_state.json"), "[" * 100000 + "]" * 100000)
    os.symlink(os.path.join(d, "loop2"), os.path.join(d, "loop"))
    os.symlink(os.path.join(d, "loop"), os.path.join(d, "loop2"))
    truncated = model_dir(d, "truncated", weights=lambda b: b[:len(b) // 2])
    garbage = model_dir(d, "garbage", weights=lambda b: bytes((i * 131 + 7) % 256 for i in range(len(b))))
    mismatch = model_dir(d, "mismatch", config={"vocab_size": 50})
    inf = model_dir(d, "inf", weights=lambda b: set_f32(b, "h.1.mlp.c_fc.weight", 5, float("inf")))
    nan = model_dir(d, "nan", weights=lambda b: set_f32(b, "ln_f.weight", 0, float("nan")))
    no_config = os.path.join(d, "empty_model")
    os.makedirs(no_config)
    tok = token_dir(d, "tok", 64)
    write(os.path.join(d, "text.txt"), "some text to score\n")
    write(os.path.join(d, "big.txt"), "all work and no play " * 200)
    f = os.path.join(d, "f.json")
    hw = "cost --hw " + f
    train = "train --data %s/none --out %s/o --config %s" % (d, d, f)
    sweep = "sweep --list --spec " + f
    hella = '{"activity_label": "a", "ctx_a": "b", "ctx_b": "c", "endings": ["d", "e"], '
    train_tiny = "train --data %s --out %%s --config tiny --steps 2 --seq-len 8 --batch-size 2 " \
                 "--eval-iters 1 --log-interval 0" % tok
    bi, js = "BadInputs.", "Json."
    return [
        # Usage errors (exit 2): CLI11's message.
        Case("no subcommand", "", "CliExitCodes.UsageErrorsExitWithTwo"),
        Case("unknown subcommand", "no-such-command",
             "CliExitCodes.AnUnknownCommandIsNamedWithTheCommandsThereAre"),
        Case("unknown option", "cost --no-such-option", "CliExitCodes.UsageErrorsExitWithTwo"),
        Case("option without its value", "cost --window", "CliExitCodes.UsageErrorsExitWithTwo"),
        Case("value of the wrong type", "cost --window abc", "CliExitCodes.UsageErrorsExitWithTwo"),
        Case("required option missing", "prepare --text a.txt", "CliExitCodes.UsageErrorsExitWithTwo"),
        Case("`--threads 2147483647`", "--threads 2147483647 hw show",
             "FuzzCorpusCli.ParseWithoutRunningAcceptsAndRejectsLikeTheCli"),
        # Files that are missing or unreadable.
        Case("missing hardware file", "cost --hw /nonexistent/hw.json",
             "CliExitCodes.FailuresExitWithOneAndSayWhy"),
        Case("--hw: a symlink loop", "cost --hw %s/loop" % d, bi + "SymlinkLoopsAreNamed"),
        Case("--config: a symlink loop", "train --data x --out %s/o2 --config %s/loop" % (d, d),
             bi + "SymlinkLoopsAreNamed"),
        Case("--model: a symlink loop", "perplexity --model %s/loop --text %s/text.txt" % (d, d),
             bi + "SymlinkLoopsAreNamed"),
        Case("model directory without config.json",
             "perplexity --model %s --text %s/text.txt" % (no_config, d),
             "Checkpoint.BadModelDirectoriesGiveErrors"),
        # Hardware files.
        Case("hardware: `quantization.q.levels: 4294967312`", hw, bi + "IntegersThatDoNotFitAreRejectedNotWrapped",
             {f: '{"quantization": {"q": {"levels": 4294967312}}}'}),
        Case("hardware: `noise.seed: -1`", hw, bi + "IntegersThatDoNotFitAreRejectedNotWrapped",
             {f: '{"noise": {"seed": -1}}'}),
        Case("hardware: thousands of `[`", hw, js + "DeepNestingIsAnErrorNotACrash", {f: BOMB}),
        Case("hardware: duplicate key", hw, js + "DuplicateKeysAreRejected",
             {f: '{"window": 4, "window": 8}'}),
        Case("hardware: unknown field", hw, "HwConfig.BadValuesNameTheField", {f: '{"bogus": 1}'}),
        Case("hardware: `window: 1000`", hw, "HwConfig.BadValuesNameTheField", {f: '{"window": 1000}'}),
        Case("hardware: `array_size: \"64\"`", hw, "HwConfig.BadValuesNameTheField",
             {f: '{"array_size": "64"}'}),
        # Model configurations and weights.
        Case("config.json: `layer_norm_epsilon: 1e999`", train, bi + "NonFiniteAndAbsurdConfigValues",
             {f: '{"layer_norm_epsilon": 1e999}'}),
        Case("config.json: `n_layer: 2147483647`", train, bi + "MemoryEstimateIsCheckedBeforeAllocation",
             {f: '{"n_layer": 2147483647}'}),
        Case("config.json: `n_head: 3.0`", train, js + "CheckedIntegersRejectWhatDoesNotFit",
             {f: '{"n_head": 3.0}'}),
        Case("config.json: `n_layer: -2`", train, "Checkpoint.BadModelDirectoriesGiveErrors",
             {f: '{"n_layer": -2}'}),
        Case("config.json: truncated", train, js + "SyntaxErrorsNameSourceAndLine", {f: '{"n_layer": 2, '}),
        Case("model.safetensors truncated", "perplexity --model %s --text %s/text.txt" % (truncated, d),
             "Checkpoint.BadModelDirectoriesGiveErrors"),
        Case("model.safetensors: random bytes", "perplexity --model %s --text %s/text.txt" % (garbage, d),
             "Checkpoint.BadModelDirectoriesGiveErrors"),
        Case("config.json does not match the weights (`vocab_size: 50`)",
             "perplexity --model %s --text %s/text.txt" % (mismatch, d),
             "Checkpoint.BadModelDirectoriesGiveErrors"),
        Case("weights holding inf", "perplexity --model %s --text %s/text.txt" % (inf, d),
             "BadNumbers.NonFiniteWeightsNameTheTensorUnlessAllowed"),
        Case("weights holding NaN, trained with `--allow-nonfinite-weights`",
             "train --init %s --allow-nonfinite-weights --data %s --out %s/nan_run --steps 2 "
             "--seq-len 8 --batch-size 2 --eval-iters 1 --log-interval 0" % (nan, tok, d),
             "BadNumbers.DivergedTrainingStopsNamingTheStepAndKeepsTheLastGoodCheckpoint"),
        Case("training_state.json: 100000 nested `[`", "train --resume " + ck,
             bi + "DeeplyNestedTrainingStateIsAnErrorNotACrash"),
        # Token ids and data.
        Case("token ids out of range (decode)", "tokenize --tokenizer bytes --decode --text " + f,
             bi + "OutOfRangeTokenIds", {f: "1 999999"}),
        Case("token file with an id beyond the model's vocabulary",
             "perplexity --model %s --tokens %s/ids.bin --tokens-format uint32" % (TINY, d),
             "TokenDataset.TokenBeyondVocabularyNamesFileAndOffset",
             {os.path.join(d, "ids.bin"): struct.pack("<4I", 1, 2, 300, 4)}),
        Case("--tokens JSON: `ids: [1, 4294967297]`", "perplexity --model %s --tokens %s" % (TINY, f),
             bi + "SweepAndEvaluationReadersUseTheHardenedJsonReader", {f: '{"ids": [1, 4294967297]}'}),
        Case("--tokens JSON: `1e999`", "perplexity --model %s --tokens %s" % (TINY, f),
             bi + "SweepAndEvaluationReadersUseTheHardenedJsonReader", {f: '{"ids": [1, 1e999]}'}),
        Case("--tokens JSON: thousands of `[`", "perplexity --model %s --tokens %s" % (TINY, f),
             bi + "SweepAndEvaluationReadersUseTheHardenedJsonReader", {f: '{"ids": ' + BOMB}),
        Case("hellaswag: `label: 9223372036854775808`",
             "eval --model %s --task-file hellaswag=%s/h.jsonl" % (TINY, d),
             bi + "SweepAndEvaluationReadersUseTheHardenedJsonReader",
             {os.path.join(d, "h.jsonl"): hella + '"label": 9223372036854775808}\n'}),
        Case("lambada: `1e999`", "eval --model %s --task-file lambada_openai=%s/l.jsonl" % (TINY, d),
             bi + "SweepAndEvaluationReadersUseTheHardenedJsonReader",
             {os.path.join(d, "l.jsonl"): '{"text": "a b", "x": 1e999}\n'}),
        Case("winogrande task given ARC rows",
             "eval --model %s --task-file winogrande=%s/eval/arc_easy_test.jsonl" % (TINY, FIXTURES),
             "EvalCli.BadInputIsAnErrorAndNeverAPartialOutput"),
        Case("unknown task", "eval --model %s --tasks mmlu" % TINY,
             "EvalCli.BadInputIsAnErrorAndNeverAPartialOutput"),
        Case("tokenizer.json: thousands of `[`", "tokenize --tokenizer %s/tok.json --string hi" % d,
             bi + "SweepAndEvaluationReadersUseTheHardenedJsonReader",
             {os.path.join(d, "tok.json"): '{"model": ' + BOMB}),
        # Sweep files.
        Case("sweep file: `seeds: 4294967297`", sweep, bi + "SweepAndEvaluationReadersUseTheHardenedJsonReader",
             {f: '{"axes": {"array_size": [32]}, "seeds": 4294967297}'}),
        Case("sweep file: `prepare.batch_seed: -1`", sweep,
             bi + "SweepAndEvaluationReadersUseTheHardenedJsonReader",
             {f: '{"axes": {"array_size": [32]}, "prepare": {"batch_seed": -1}}'}),
        Case("sweep file: `prepare.finetune_lr: 1e300`", sweep,
             bi + "SweepAndEvaluationReadersUseTheHardenedJsonReader",
             {f: '{"axes": {"array_size": [32]}, "prepare": {"finetune_lr": 1e300}}'}),
        Case("sweep file: thousands of `[`", sweep, bi + "SweepAndEvaluationReadersUseTheHardenedJsonReader",
             {f: '{"axes": ' + BOMB}),
        Case("sweep file: `1e999` in an axis", sweep, bi + "SweepAndEvaluationReadersUseTheHardenedJsonReader",
             {f: '{"axes": {"noise.sigma": [1e999]}}'}),
        Case("sweep file: a grid of 10^6 points", sweep, "Targets/FuzzCorpus.EveryCommittedInputIsHandled/sweep_file",
             {f: json.dumps({"axes": {"array_size": list(range(16, 116)),
                                      "quantization.k.levels": list(range(2, 102)),
                                      "quantization.q.levels": list(range(2, 102))}})}),
        # Full disks and concurrent use.
        Case("full disk (1 kB file-size limit): `cost --output`", "cost --output %s/rep/cost.json" % d,
             "FullDisk.EveryWriterFailsCleanly", fsize=1024),
        Case("full disk (1 kB file-size limit): `prepare`",
             "prepare --text %s/big.txt --tokenizer bytes --out %s/tok2" % (d, d),
             "FullDisk.EveryWriterFailsCleanly", fsize=1024),
        Case("full disk (4 kB file-size limit): a training checkpoint", train_tiny % (d + "/full"),
             "FullDisk.EveryWriterFailsCleanly", fsize=4096),
        Case("`--out` in use by another process", train_tiny % (d + "/busy"),
             "FullDisk.SecondProcessOnTheSameOutDirIsRefused", lock=os.path.join(d, "busy")),
    ]


def limit_file_size(limit):
    def apply():
        # As on a full disk: writes past the limit fail with EFBIG instead of killing the child.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def run_case(c, d):
    for path, content in c.files.items():
        write(path, content)
    lock = None
    if c.lock:
        os.makedirs(c.lock, exist_ok=True)
        lock = open(os.path.join(c.lock, ".lock"), "w")
        fcntl.flock(lock, fcntl.LOCK_EX)
        lock.write("%d\n" % os.getpid())
        lock.flush()
    try:
        p = subprocess.run([CLI] + c.args.split(), capture_output=True, text=True,
                           env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=300,
                           preexec_fn=limit_file_size(c.fsize) if c.fsize else None)
    finally:
        if lock:
            lock.close()
    lines = [l for l in p.stderr.splitlines() if "rror" in l] or p.stderr.splitlines() or [""]
    msg = lines[0].replace(d, "$TMP").replace(ROOT + "/", "").replace("(pid %d)" % os.getpid(), "(pid $PID)")
    msg = re.sub(r"\.tmp\.\d+", ".tmp.<pid>", msg).replace("|", "\\|")
    if len(msg) > 220:
        msg = msg[:217] + "..."
    return p.returncode, msg


def bad_input_table():
    rows = ["| bad input | exit | error message (first line) | checked by |", "|---|---:|---|---|"]
    with tempfile.TemporaryDirectory() as d:
        for c in bad_input_cases(d):
            code, msg = run_case(c, d)
            if code == 0:
                raise SystemExit("bad input accepted: %s (gaincell %s)" % (c.what, c.args))
            rows.append("| %s | %d | `%s` | `%s` |" % (c.what, code, msg, c.test))
    return "\n".join(rows)


def replace_section(text, name, body):
    pattern = re.compile(r"(<!-- BEGIN %s -->\n).*?(<!-- END %s -->)" % (name, name), re.S)
    if not pattern.search(text):
        raise SystemExit("docs/reliability.md lacks the markers of section " + name)
    return pattern.sub(lambda m: m.group(1) + body + "\n" + m.group(2), text)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--fuzz-stats", default="")
    ap.add_argument("--kill-record", default="")
    a = ap.parse_args()
    with open(DOC) as f:
        text = f.read()
    if a.fuzz_stats:
        text = replace_section(text, "fuzz", fuzz_table(a.fuzz_stats))
    if a.kill_record:
        text = replace_section(text, "kill", kill_table(a.kill_record))
    text = replace_section(text, "bad-inputs", bad_input_table())
    with open(DOC, "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
