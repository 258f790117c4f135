"""``recipebench run --suite population [--draws N] [--side test|calibration]``: the CLI
side (arguments checked, output directory claimed and locked as ``run`` does)."""
from __future__ import annotations

import shlex
import time
from pathlib import Path

DRAWS = 300
OUT = {"test": Path("reports") / "population", "calibration": Path("reports") / "population_calibration"}


def cmd_population(args) -> int:
    from recipebench.detectors.base import DETECTORS
    from recipebench.harness import cli
    from recipebench.harness.population.suite import run_population
    from recipebench.harness.registry import RegistryError
    from recipebench.harness.validity import suite_lines

    if args.pipelines is not None or args.bugs is not None or args.seeds is not None or args.sweep or args.resume:
        raise RegistryError("--suite population draws its own pipelines, bugs and seed: --pipelines, --bugs, --seeds, "
                            "--sweep and --resume do not apply (--draws N and --side test|calibration do)")
    detectors = tuple(d for d in cli._names(args.detectors, DETECTORS, flag="--detectors") if d != "metric_drop")
    out = Path(args.out) if args.out else OUT[args.side]
    cli._writable_dir(Path(args.cache_dir), "--cache-dir")
    cli._writable_dir(out, "--out")
    cli._claim(out, args.force)
    start = time.perf_counter()
    with cli._locked(out):
        print(f"output directory: {out}", flush=True)
        tables = run_population(args.side, args.draws or DRAWS, out, args.cache_dir, detectors,
                                workers=args.workers or cli.DEFAULT_WORKERS, timeout=args.timeout or cli.DEFAULT_TIMEOUT,
                                progress=not args.quiet,
                                command="recipebench " + " ".join(shlex.quote(a) for a in args.argv))
    suite = tables["suite"]
    print("One run, every recipe detector, generated draws:\n"
          + "\n".join(f"  {line}" for line in suite_lines(suite[suite.side == args.side])))
    print(f"\n{len(tables['cells'])} cells in {time.perf_counter() - start:.1f}s; wrote {out}/ "
          f"(matrix.md, cells.csv, draws.csv, results.sqlite)")
    failed = tables["cells"][tables["cells"].outcome.isin(["error", "timeout"])]
    if len(failed):
        print(f"\nFAILED: {len(failed)} detector cells are error or timeout: "
              + "; ".join(f"{r.pipeline}/{r.variant}/{r.detector}" for r in failed.head(3).itertuples()))
        return cli.EXIT_FAILED_CELLS
    return cli.EXIT_OK
