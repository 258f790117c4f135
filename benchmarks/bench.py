"""Benchmark the detection matrix: cold and warm wall time, single-detector evaluation
on cached traces, cells per second, instrumentation overhead, and (with --scaling)
how cold time grows with seeds. Prints each figure; no test asserts any of them.
``--cost DB`` instead reads a results database (e.g. reports/results.sqlite) and prints
where a cold run of that matrix spends its core-seconds, without running anything.
``--startup`` times the commands that must answer at once (``--help``, ``list bugs``,
a usage error) with the catalog index missing (cold) and present (warm).

    python benchmarks/bench.py [--seeds 5] [--workers 2] [--scaling]
    python benchmarks/bench.py --cost reports/full/results.sqlite [--workers 2]
    python benchmarks/bench.py --startup [--repeats 7]
"""
from __future__ import annotations

import argparse
import csv
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]


def timed_run(out: Path, cache: Path, *extra: str, command: str = "run") -> float:
    cmd = [sys.executable, "-m", "recipebench", command, "--quiet", "--out", str(out), "--cache-dir", str(cache), *extra]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def overhead(repeats: int = 7) -> dict[str, float]:
    """Traced run (record) vs the bare training loop of the same pipeline, same seeds,
    interleaved so that machine noise hits both alike; ratio of the medians."""
    import torch

    from recipebench.harness.pipeline import PIPELINES, get_pipeline
    from recipebench.harness.trace import batches, prepare, record, seed_everything, steps_per_epoch, train

    torch.set_num_threads(1)
    ratios = {}
    for name in PIPELINES.names():
        p = get_pipeline(name)
        prep = prepare(p)
        record(p, 99)  # warm-up (imports, pretraining caches)
        bare, traced = [], []
        for seed in range(repeats):
            seed_everything(seed)
            t = time.perf_counter()
            model = p.build_model(p)
            train(p, model, batches(p, prep, seed), p.steps, steps_per_epoch(p, prep))
            p.evaluate(model, prep.x_test, prep.y_test), p.evaluate(model, prep.x_val, prep.y_val)
            bare.append(time.perf_counter() - t)
            traced.append(record(p, seed).seconds)
        ratios[name] = statistics.median(traced) / statistics.median(bare)
    return ratios


def cost(db: Path, workers: int) -> None:
    """Core-seconds of a cold run, from the seconds the database recorded for each traced
    training run and each detector cell as first computed: by split (calibration, test,
    control), by what spent them (the traced training or a detector), and the floor on
    ``workers`` cores if the work divided perfectly."""
    import sqlite3

    import pandas as pd

    from recipebench.harness.validity import with_split

    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        runs = pd.read_sql("SELECT pipeline, variant, seed, seconds FROM runs", con)
        verdicts = pd.read_sql("SELECT pipeline, variant, seed, detector, seconds FROM verdicts", con)
    runs, verdicts = with_split(runs, "variant"), with_split(verdicts, "variant")
    spent = pd.concat([runs.assign(spender="traced training"), verdicts.rename(columns={"detector": "spender"})])
    spent["seconds"] = spent.seconds.fillna(0.0)
    total = spent.seconds.sum()
    print(f"{db}: {len(runs)} runs, {len(verdicts)} cells, {total:,.0f} core-s "
          f"(at least {total / workers / 60:.1f} min on {workers} cores)")
    for title, key in (("by split", "split"), ("by what spends it", "spender")):
        print(f"\n{title}:")
        for name, sec in spent.groupby(key).seconds.sum().sort_values(ascending=False).items():
            print(f"  {name:<28} {sec:>9,.0f} core-s  {sec / total:6.1%}  >= {sec / workers / 60:5.1f} min on {workers} cores")


STARTUP = (("recipebench --help", ("--help",)),
           ("recipebench run --help", ("run", "--help")),
           ("recipebench list bugs", ("list", "bugs")),
           ("recipebench list bugs --format csv", ("list", "bugs", "--format", "csv")),
           ("recipebench run --bugs typo (usage error)", ("run", "--bugs", "typo")))


def startup(repeats: int) -> None:
    """Median wall time of each command (the ``recipebench`` script beside this Python,
    else ``python -m recipebench``), ``repeats`` times each, interleaved, run from a
    temporary directory whose default ``--cache-dir`` has its catalog index deleted
    before each run (cold: every registry imported, the index rewritten) or left in
    place (warm: the cold round's last command wrote it). A source file changed
    meanwhile makes the index stale and that run cold: the median keeps such a run out."""
    FILE = "catalog.json"  # harness/catalog.py; named here so that a checkout without it can be timed too

    script = Path(sys.executable).with_name("recipebench")
    command = [str(script)] if script.is_file() else [sys.executable, "-m", "recipebench"]
    times: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / ".recipebench_cache"  # the default --cache-dir, run from tmp
        for _ in range(repeats):
            for state in ("cold", "warm"):
                for label, argv in STARTUP:
                    if state == "cold":
                        (cache / FILE).unlink(missing_ok=True)
                    start = time.perf_counter()
                    subprocess.run([*command, *argv], cwd=tmp,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    times.setdefault((label, state), []).append(time.perf_counter() - start)
    print(f"median of {repeats} runs, seconds (cold: no catalog index; warm: a fresh one)")
    print(f"  {'command':<44} {'cold':>6} {'warm':>6}")
    for label, _ in STARTUP:
        cold, warm = (statistics.median(times[label, s]) for s in ("cold", "warm"))
        print(f"  {label:<44} {cold:6.2f} {warm:6.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--scaling", action="store_true", help="also time cold runs with 1, 2 and 4 seeds")
    ap.add_argument("--cost", type=Path, metavar="DB", help="print a results database's core-seconds and stop")
    ap.add_argument("--startup", action="store_true",
                    help="time --help, list bugs and a usage error, cold and warm catalog index, and stop")
    ap.add_argument("--repeats", type=int, default=7, help="--startup: runs per command (default 7)")
    args = ap.parse_args()
    if args.cost:
        return cost(args.cost, args.workers)
    if args.startup:
        return startup(args.repeats)
    common = ("--seeds", str(args.seeds), "--workers", str(args.workers))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cold = timed_run(tmp / "out", tmp / "cache", *common)
        warm = timed_run(tmp / "out", tmp / "cache", *common)
        single = timed_run(tmp / "single", tmp / "cache", *common, "--detectors", "batch_dependency")
        new_detector = timed_run(tmp / "eval", tmp / "cache", *common,
                                 f"{ROOT}/examples/shuffled_label_baseline.py:ShuffledLabelBaseline", command="eval-detector")
        with (tmp / "out" / "cells.csv").open() as f:
            n_cells = sum(1 for _ in csv.DictReader(f))
        print(f"cold run, default matrix ({args.seeds} seeds, {args.workers} workers): {cold:.1f} s")
        print(f"warm rerun, unchanged code:                     {warm:.1f} s")
        print(f"single detector on cached traces:               {single:.1f} s")
        print(f"eval-detector, new detector, cached traces:     {new_detector:.1f} s")
        print(f"cells (pipeline x bug x detector):              {n_cells}  ->  {n_cells / cold:.2f} cells/s cold")
        if args.scaling:
            for seeds in (1, 2, 4):
                t = timed_run(tmp / f"s{seeds}", tmp / f"c{seeds}", "--seeds", str(seeds), "--workers", str(args.workers))
                print(f"cold run, full catalog, {seeds} seed(s):               {t:.1f} s")
            from recipebench.bugs.base import BUGS

            names = BUGS.names()
            for k in (4, 8, 16):
                t = timed_run(tmp / f"b{k}", tmp / f"cb{k}", "--seeds", "2", "--workers", str(args.workers),
                              "--bugs", ",".join(names[:k]))
                print(f"cold run, 2 seeds, {k:>2} bugs (alphabetical):        {t:.1f} s")
    for name, ratio in overhead().items():
        print(f"instrumentation overhead, {name:<12} traced/bare: {ratio:.2f}x")


if __name__ == "__main__":
    main()
