#!/usr/bin/env python3
"""Runs fuzz targets until their coverage plateaus (docs/reliability.md, "Fuzzing").

    nice -n 19 /usr/bin/python3 fuzz/plateau.py --build-dir build-sanitize --stats DIR
        [--jobs 4] [--min-runs 4096] [--max-seconds 900] [--merge] [--len-control N]
        [TARGET...]

Each target runs on its committed corpus (new inputs go to <build>/plateau/new/<target>) and is
stopped (SIGINT; libFuzzer then prints its final statistics) once it ran at least --min-runs
executions and its edge coverage (`cov:`) grew by at most 0.1 % over the second half of its
executions so far (checked at libFuzzer's `pulse` lines, at every doubling of the executions), or
when --max-seconds is reached. The growth of edges and of libFuzzer's finer features (`ft:`) over
the second half is recorded, and the strict criterion (no new edge and no new feature in the
second half) as `strict_plateau`. The criterion counts executions, not seconds: the
runs are niced on a shared machine and may get no CPU for a while, and a stall is no plateau.
A target with a dictionary, fuzz/dict/<target>.dict, runs with it (-dict).
--merge adds the new inputs that reach coverage the committed corpus lacks to fuzz/corpus/<target>
(libFuzzer -merge=1, which keeps the smallest inputs). DIR/<target>.json receives executions,
seconds, final cov/ft, the second and execution of the last gain of each, their growth over the
second half, the corpus size in files and bytes, whether it plateaued (and strictly) and the exit
status; scripts/reliability_figures.py turns them into the table of the doc. A crash stops that target and is reported (input in
<build>/crashes/).
"""
import argparse
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

# A target has plateaued when its edge coverage grew by at most this share over the second half
# of its executions (at a doubling of the executions).
PLATEAU_GROWTH = 0.001
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LINE = re.compile(r"^#(\d+)\s+(\w+)\s+cov: (\d+) ft: (\d+)")
UNITS = re.compile(r"stat::number_of_executed_units: (\d+)")
DONE = re.compile(r"Done (\d+) runs")


def corpus_size(d):
    files = [os.path.join(d, f) for f in os.listdir(d)]
    return len(files), sum(os.path.getsize(f) for f in files)


class Run:
    def __init__(self, build, target, log_dir, max_s, min_runs, timeout, len_control=None):
        self.target = target
        self.new = os.path.join(build, "plateau", "new", target)
        os.makedirs(self.new, exist_ok=True)
        self.log_path = os.path.join(log_dir, target + ".log")
        corpus = os.path.join(ROOT, "fuzz", "corpus", target)
        cmd = [os.path.join(build, "fuzz_" + target), self.new, corpus,
               "-max_total_time=%d" % max_s, "-timeout=%d" % timeout, "-rss_limit_mb=2048",
               "-max_len=65536", "-print_final_stats=1",
               "-artifact_prefix=%s/crashes/%s-" % (build, target)]
        # A target's dictionary (fuzz/dict/<target>.dict): the keywords its parser compares
        # against, which libFuzzer would otherwise rediscover byte by byte.
        dictionary = os.path.join(ROOT, "fuzz", "dict", target + ".dict")
        if os.path.exists(dictionary):
            cmd.append("-dict=" + dictionary)
        if len_control is not None:
            cmd.append("-len_control=%d" % len_control)
        self.start = time.monotonic()
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True, errors="replace", cwd=ROOT)
        self.cov = self.ft = self.runs = 0
        self.cov_at = self.ft_at = (0.0, 0)  # (seconds, execution) of the last gain
        self.units = None
        self.interrupted = False
        self.min_runs = min_runs
        self.plateau_seen = False
        self.history = []  # (executions, edges so far, features so far) at each status line
        self.reader = threading.Thread(target=self.read, daemon=True)
        self.reader.start()

    def read(self):
        with open(self.log_path, "w") as log:
            for line in self.proc.stderr:
                t = time.monotonic() - self.start
                log.write("%.1f %s" % (t, line))
                m = LINE.match(line)
                if m:
                    runs, cov, ft = int(m.group(1)), int(m.group(3)), int(m.group(4))
                    self.runs = runs
                    # The start-up replay of the corpus (INITED) is not a gain of the run.
                    if m.group(2) != "INITED":
                        if cov > self.cov:
                            self.cov_at = (t, runs)
                        if ft > self.ft:
                            self.ft_at = (t, runs)
                    self.cov, self.ft = max(self.cov, cov), max(self.ft, ft)
                    self.history.append((runs, self.cov, self.ft))
                    if m.group(2) == "pulse" and self.plateaued_at(runs):
                        self.plateau_seen = True
                m = UNITS.search(line) or DONE.search(line)
                if m:
                    self.units = int(m.group(1))

    def reached_by(self, runs):
        """(edges, features) reached by execution `runs` (the last status line at or before it)."""
        reached = (0, 0)
        for r, cov, ft in self.history:
            if r > runs:
                break
            reached = (cov, ft)
        return reached

    def growth_second_half(self, runs):
        """Relative growth of (edges, features) over the second half of `runs` executions."""
        cov, ft = self.reached_by(runs // 2)
        return ((self.cov - cov) / cov if cov else None, (self.ft - ft) / ft if ft else None)

    def plateaued_at(self, runs):
        """Edge coverage grew by at most PLATEAU_GROWTH over the second half of `runs` executions
        (and there were enough of them).

        Edges (`cov:`) are the criterion. Their count keeps creeping up for millions of
        executions on parsers of nested formats (a new number format, a deeper error path), so a
        plateau is a flat curve rather than no new edge at all; the strict criterion (no new edge
        and no new feature in the second half) is recorded beside as `strict_plateau`."""
        if runs < self.min_runs:
            return False
        cov_growth, _ = self.growth_second_half(runs)
        return cov_growth is not None and cov_growth <= PLATEAU_GROWTH

    def strictly_plateaued_at(self, runs):
        return runs >= self.min_runs and 2 * max(self.cov_at[1], self.ft_at[1]) <= runs

    def elapsed(self):
        return time.monotonic() - self.start

    def stop(self):
        self.interrupted = True
        self.proc.send_signal(signal.SIGINT)


def rounded(x):
    return None if x is None else round(x, 5)


def finish(run, build, stats_dir, merge):
    status = run.proc.wait()
    run.reader.join()
    seconds = run.elapsed()
    # libFuzzer exits with 72 after SIGINT (-interrupted_exitcode); that is the plateau stop.
    crashed = not (status == 0 or (run.interrupted and status == 72))
    corpus_dir = os.path.join(ROOT, "fuzz", "corpus", run.target)
    before = corpus_size(corpus_dir)
    if merge and not crashed:
        subprocess.run([os.path.join(build, "fuzz_" + run.target), "-merge=1", corpus_dir,
                        run.new], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       cwd=ROOT, check=True)
    files, size = corpus_size(corpus_dir)
    runs = run.units or run.runs
    s = {
        "target": run.target, "runs": run.units or run.runs, "seconds": round(seconds, 1),
        "coverage": run.cov, "features": run.ft,
        "last_coverage_gain_s": round(run.cov_at[0], 1), "last_coverage_gain_at": run.cov_at[1],
        "last_feature_gain_s": round(run.ft_at[0], 1), "last_feature_gain_at": run.ft_at[1],
        "plateau": run.plateaued_at(runs),
        "strict_plateau": run.strictly_plateaued_at(runs),
        "coverage_growth_second_half": rounded(run.growth_second_half(runs)[0]),
        "features_growth_second_half": rounded(run.growth_second_half(runs)[1]),
        "corpus": files, "corpus_bytes": size,
        "corpus_added": files - before[0], "status": 1 if crashed else 0, "exit_code": status,
    }
    with open(os.path.join(stats_dir, run.target + ".json"), "w") as f:
        json.dump(s, f)
        f.write("\n")
    print("plateau %-17s %s" % (run.target, json.dumps(s)), flush=True)
    return not crashed


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build-dir", default="build-sanitize")
    ap.add_argument("--stats", required=True)
    ap.add_argument("--jobs", type=int, default=4)
    ap.add_argument("--min-runs", type=int, default=4096)
    # libFuzzer's -timeout is wall time: on a shared machine a niced run can be left without CPU
    # for tens of seconds (41 s was seen), which a 10 s limit reports as a hang.
    ap.add_argument("--timeout", type=int, default=120)
    ap.add_argument("--max-seconds", type=int, default=900)
    ap.add_argument("--merge", action="store_true")
    # libFuzzer's -len_control: 0 lets mutations reach -max_len at once instead of raising the
    # length limit slowly (its default, 100); parsers whose coverage grows with input length
    # (tokenizer_json) otherwise keep finding edges only as the limit grows.
    ap.add_argument("--len-control", type=int, default=None)
    ap.add_argument("targets", nargs="*")
    a = ap.parse_args()
    build = os.path.abspath(a.build_dir)
    targets = a.targets or sorted(os.listdir(os.path.join(ROOT, "fuzz", "corpus")))
    os.makedirs(a.stats, exist_ok=True)
    os.makedirs(os.path.join(build, "crashes"), exist_ok=True)
    log_dir = os.path.join(build, "plateau", "logs")
    os.makedirs(log_dir, exist_ok=True)
    os.environ.setdefault("GAINCELL_DATA", os.path.join(ROOT, "data"))
    os.environ.setdefault("ASAN_OPTIONS", "detect_leaks=1")
    os.environ["UBSAN_OPTIONS"] = "print_stacktrace=1:halt_on_error=1"
    pending, running, ok = list(targets), [], True
    # SIGUSR1 ends the runs early (as at --max-seconds): their figures are recorded as they are.
    signal.signal(signal.SIGUSR1, lambda *_: [r.stop() for r in running if not r.interrupted])
    while pending or running:
        while pending and len(running) < a.jobs:
            running.append(Run(build, pending.pop(0), log_dir, a.max_seconds, a.min_runs,
                               a.timeout, a.len_control))
        time.sleep(2)
        for run in list(running):
            if run.proc.poll() is None and not run.interrupted:
                if run.plateau_seen:
                    run.stop()
                continue
            if run.proc.poll() is not None:
                running.remove(run)
                ok = finish(run, build, a.stats, a.merge) and ok
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
