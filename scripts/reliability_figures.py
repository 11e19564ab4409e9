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
import glob
import json
import os
import re
import subprocess
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(ROOT, "docs", "reliability.md")
CLI = os.path.join(ROOT, "build", "gaincell")
TINY = os.path.join(ROOT, "tests", "fixtures", "gpt2_tiny")


def fuzz_table(stats_dir):
    rows = ["| target | executions | seconds | exec/s | coverage (edges) | last coverage gain at execution | corpus files | crash inputs |",
            "|---|---:|---:|---:|---:|---:|---:|---:|"]
    total_runs = total_s = 0
    for target in sorted(os.listdir(os.path.join(ROOT, "fuzz", "corpus"))):
        corpus = glob.glob(os.path.join(ROOT, "fuzz", "corpus", target, "*"))
        crashes = [c for c in corpus if os.path.basename(c).startswith("crash-")]
        s = {}
        path = os.path.join(stats_dir, target + ".json") if stats_dir else ""
        if path and os.path.exists(path):
            with open(path) as f:
                s = json.load(f)
        runs, secs = s.get("runs", 0), s.get("seconds", 0.0)
        total_runs += runs
        total_s += secs
        rate = "%.0f" % (runs / secs) if secs else "-"
        gain = s.get("last_coverage_gain_at")
        gain_text = "%d (%.0f%%)" % (gain, 100.0 * gain / runs) if gain is not None and runs else "-"
        rows.append("| %s | %s | %.0f | %s | %s | %s | %d | %d |" % (
            target, runs or "-", secs, rate, s.get("coverage", "-"), gain_text, len(corpus),
            len(crashes)))
    rows.append("| **all** | %d | %.0f | | | | | |" % (total_runs, total_s))
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


def bad_input_cases(d):
    """(description, input file contents or None, CLI arguments)."""
    os.makedirs(os.path.join(d, "ck"))
    with open(os.path.join(d, "ck", "training_state.json"), "w") as f:
        f.write("[" * 100000 + "]" * 100000)
    for name in ("config.json", "model.safetensors"):
        with open(os.path.join(ROOT, "tests", "fixtures", "gpt2_tiny", name), "rb") as src:
            with open(os.path.join(d, "ck", name), "wb") as dst:
                dst.write(src.read())
    os.symlink(os.path.join(d, "loop2"), os.path.join(d, "loop"))
    os.symlink(os.path.join(d, "loop"), os.path.join(d, "loop2"))
    train = "train --data %s/none --out %s/o --config %s/f.json" % (d, d, d)
    return [
        ("hardware: `quantization.q.levels: 4294967312`",
         '{"quantization": {"q": {"levels": 4294967312}}}', "cost --hw %s/f.json" % d),
        ("hardware: `noise.seed: -1`", '{"noise": {"seed": -1}}', "cost --hw %s/f.json" % d),
        ("hardware: thousands of `[`", "[" * 5000, "cost --hw %s/f.json" % d),
        ("hardware: duplicate key", '{"window": 4, "window": 8}', "cost --hw %s/f.json" % d),
        ("config.json: `layer_norm_epsilon: 1e999`", '{"layer_norm_epsilon": 1e999}', train),
        ("config.json: `n_layer: 2147483647`", '{"n_layer": 2147483647}', train),
        ("config.json: `n_head: 3.0`", '{"n_head": 3.0}', train),
        ("config.json: truncated", '{"n_layer": 2, ', train),
        ("training_state.json: 100000 nested `[`", None, "train --resume %s/ck" % d),
        ("--config: a symlink loop", None,
         "train --data x --out %s/o2 --config %s/loop" % (d, d)),
        ("--model: a symlink loop", None, "generate --model %s/loop --prompt hi" % d),
        ("token ids out of range", "1 999999", "tokenize --tokenizer bytes --decode --text %s/f.json" % d),
        ("sweep file: `seeds: 4294967297`", '{"axes": {"array_size": [32]}, "seeds": 4294967297}',
         "sweep --list --spec %s/f.json" % d),
        ("sweep file: thousands of `[`", '{"axes": ' + "[" * 5000, "sweep --list --spec %s/f.json" % d),
        ("sweep file: `1e999` in an axis", '{"axes": {"noise.sigma": [1e999]}}',
         "sweep --list --spec %s/f.json" % d),
        ("sweep file: a grid of 10^6 points",
         json.dumps({"axes": {"array_size": list(range(16, 116)),
                              "quantization.k.levels": list(range(2, 102)),
                              "quantization.q.levels": list(range(2, 102))}}),
         "sweep --list --spec %s/f.json" % d),
        ("--tokens JSON: `ids: [1, 4294967297]`", '{"ids": [1, 4294967297]}',
         "perplexity --model %s --tokens %s/f.json" % (TINY, d)),
        ("`--threads 2147483647`", None, "--threads 2147483647 hw show"),
    ]


def bad_input_table():
    rows = ["| bad input | exit | error message (first line) |", "|---|---:|---|"]
    with tempfile.TemporaryDirectory() as d:
        for what, content, args in bad_input_cases(d):
            if content is not None:
                with open(os.path.join(d, "f.json"), "w") as f:
                    f.write(content)
            p = subprocess.run([CLI] + args.split(), capture_output=True, text=True,
                               env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=120)
            lines = [l for l in p.stderr.splitlines() if "error" in l] or p.stderr.splitlines() or [""]
            msg = lines[0].replace(d, "$TMP").replace("|", "\\|")
            if len(msg) > 220:
                msg = msg[:217] + "..."
            rows.append("| %s | %d | `%s` |" % (what, p.returncode, msg))
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
