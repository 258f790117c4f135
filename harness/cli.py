"""Command line: parses arguments and dispatches; the work lives in runner/report."""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
import warnings
from pathlib import Path

import pandas as pd
from tabulate import tabulate

from recipebench.bugs.base import BUGS, parse_variant
from recipebench.detectors.base import DETECTORS
from recipebench.harness.pipeline import PIPELINES, get_pipeline
from recipebench.harness.registry import RegistryError

DEFAULT_SEEDS = 5
DEFAULT_OUT = "reports"


def _names(value: str | None, registry, allow_severity: bool = False) -> tuple:
    """Comma-separated names (or file.py:Name plugin specs) validated against a registry."""
    if value is None:  # the default catalog: every entry but peer tools and opt-in detectors
        return tuple(n for n in registry.names()
                     if not getattr(registry.get(n), "peer", False) and getattr(registry.get(n), "in_default_run", True))
    out = []
    for item in filter(None, (s.strip() for s in value.split(","))):
        name, severity = parse_variant(item) if allow_severity and ".py:" not in item else (item, None)
        resolved = registry.resolve(name)
        if severity is not None:
            BUGS.get(resolved)(severity)  # validates the severity name
        out.append(f"{resolved}@{severity}" if severity else resolved)
    return tuple(dict.fromkeys(out))


def _plugins(args) -> tuple:
    specs = []
    for kind, attrs in (("pipeline", ("pipelines",)), ("bug", ("bugs", "bug")), ("detector", ("detectors", "detector"))):
        for value in (getattr(args, a, None) for a in attrs):
            specs += [(kind, s.strip()) for s in (value or "").split(",") if ".py:" in s]
    return tuple(specs)


def _execute(config, out: Path, args, store=None, html: bool = True) -> dict:
    """Run ``config`` into ``out`` (results database + reports); returns the tables."""
    from recipebench.harness.report import provenance, write_reports
    from recipebench.harness.runner import run_matrix
    from recipebench.harness.store import Store

    store = store or Store(out / "results.sqlite")
    store.set_meta(config=config.__dict__, command="recipebench " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
                   provenance=provenance())
    run_matrix(config, store, args.cache_dir, progress=not args.quiet)
    tables = write_reports(store, out, html=html)
    tables["verdicts"], tables["runs"] = store.verdicts(), store.runs()
    store.close()
    return tables


def _config(args, pipelines: tuple, variants: tuple, detectors: tuple):
    from recipebench.harness.runner import Config

    return Config(pipelines=pipelines, variants=variants, detectors=detectors, seeds=tuple(range(args.seeds)),
                  workers=args.workers, timeout=args.timeout, plugins=_plugins(args),
                  executor=getattr(args, "executor", "local"), address=getattr(args, "address", None))


def cmd_run(args) -> int:
    from recipebench.harness.runner import Config
    from recipebench.harness.store import Store

    out = Path(args.out)
    store = None
    if args.resume:
        if not (out / "results.sqlite").exists():
            raise RegistryError(f"--resume: there is no {out / 'results.sqlite'} holding an earlier run to resume")
        store = Store(out / "results.sqlite")
        saved = store.meta().get("config")
        if not saved:
            raise RegistryError(f"--resume: {out / 'results.sqlite'} holds no earlier run to resume")
        config = Config(**{k: tuple(tuple(x) if isinstance(x, list) else x for x in v) if isinstance(v, list) else v
                           for k, v in saved.items()})
    else:
        variants = _names(args.bugs, BUGS, allow_severity=True)
        if args.sweep:
            variants = _sweep(variants)
        detectors = _names(args.detectors, DETECTORS)
        if args.with_peers:
            detectors += tuple(n for n, c in DETECTORS.items() if getattr(c, "peer", False) and n not in detectors)
        config = _config(args, _names(args.pipelines, PIPELINES), variants, detectors)
    start = time.perf_counter()
    tables = _execute(config, out, args, store)
    summary = tables["detectors"][["detector", "caught", "applicable", "max_fp_rate"]]
    print(tabulate(summary.to_dict("records"), headers="keys", tablefmt="simple", floatfmt=".2f"))
    print(f"\n{len(tables['cells'])} cells in {time.perf_counter() - start:.1f}s -> "
          f"{out / 'matrix.md'}, {out / 'cells.csv'}, {out / 'impact.csv'}")
    return 0


def _sweep(variants: tuple) -> tuple:
    return tuple(f"{parse_variant(v)[0]}@{s}" for v in variants for s in BUGS.get(parse_variant(v)[0]).severities)


def cmd_check_bug(args) -> int:
    from recipebench.harness.evaluate import check_bug_text

    name = BUGS.resolve(args.bug)
    cls = BUGS.get(name)
    pipelines = [p for p in _names(args.pipelines, PIPELINES) if cls().applies_to(get_pipeline(p))]
    if not pipelines:
        offered = sorted({c for n in PIPELINES.names() for c in get_pipeline(n).capabilities})
        raise RegistryError(f"bug '{name}' requires capabilities {sorted(cls.requires)}; no selected pipeline "
                            f"offers them all (capabilities offered: {', '.join(offered)})")
    variants = _sweep((name,)) if args.sweep else (name,)
    config = _config(args, tuple(pipelines), variants, _names(None, DETECTORS))
    out = Path(args.out or Path(args.cache_dir) / "check-bug" / name)
    tables = _execute(config, out, args, html=False)  # the summary is the point; `recipebench report` draws html
    print(check_bug_text(name, tables["runs"], tables["cells"], tables["impact"]))
    print(f"\nfull matrix: {out / 'matrix.md'}")
    return 0


def cmd_eval_detector(args) -> int:
    from recipebench.harness.evaluate import eval_detector_text

    name = DETECTORS.resolve(args.detector)
    detectors = tuple(dict.fromkeys([*_names(None, DETECTORS), name]))
    config = _config(args, PIPELINES.names(), _names(args.bugs, BUGS, allow_severity=True), detectors)
    out = Path(args.out or Path(args.cache_dir) / "eval-detector" / name)
    tables = _execute(config, out, args, html=False)
    print(eval_detector_text(name, tables["cells"], tables["verdicts"], args.holdout))
    print(f"\nfull matrix: {out / 'matrix.md'}")
    return 0


def cmd_report(args) -> int:
    from recipebench.harness.report import write_reports
    from recipebench.harness.store import Store

    db = Path(args.out) / "results.sqlite"
    if not db.exists():
        raise RegistryError(f"no results database at {db}; run `recipebench run --out {args.out}` first")
    store = Store(db)
    write_reports(store, Path(args.out))
    print(f"rendered {Path(args.out) / 'matrix.md'}")
    return 0


def list_rows(what: str) -> list[dict]:
    if what == "bugs":
        return [dict(name=n, family=c.family, recipe_step=c.recipe_step, requires=",".join(sorted(c.requires)),
                     severities=",".join(c.severities), description=c.description, source=c.source)
                for n, c in BUGS.items()]
    if what == "detectors":
        return [dict(name=n, stage=c.stage, recipe_step=c.recipe_step, kind=c.kind, cost=c.cost,
                     requires=",".join(sorted(c.requires)), example_bug=c.example_bug, description=c.description)
                for n, c in DETECTORS.items()]
    rows = []
    for n, _ in PIPELINES.items():
        p = get_pipeline(n)
        rows.append(dict(name=n, task=p.task, metric=p.metric, capabilities=",".join(sorted(p.capabilities)),
                         steps=p.steps, description=p.description))
    return rows


def cmd_list(args) -> int:
    rows = list_rows(args.what)
    if args.format == "json":
        print(json.dumps(rows, indent=2))
    elif args.format == "csv":
        print(pd.DataFrame(rows).to_csv(index=False, lineterminator="\n"), end="")
    else:  # the terminal table leaves out the long columns; csv/json have everything
        wide = {"source", "description"} if args.what != "pipelines" else set()
        print(tabulate([{k: v for k, v in r.items() if k not in wide} for r in rows], headers="keys",
                       tablefmt="simple", maxcolwidths=50))
    return 0


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="recipebench", description="Benchmark of recipe detectors vs silent training bugs.")
    sub = ap.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the detection matrix and write the reports")
    run.add_argument("--pipelines", help="comma-separated names or file.py:factory (default: all)")
    run.add_argument("--bugs", help="comma-separated bug names, name@severity or file.py:Class (default: all)")
    run.add_argument("--detectors", help="comma-separated detector names or file.py:Class (default: all)")
    run.add_argument("--seeds", type=int, default=DEFAULT_SEEDS, help=f"seeds per cell (default {DEFAULT_SEEDS})")
    run.add_argument("--workers", type=int, default=2, help="warm worker processes (default 2)")
    run.add_argument("--timeout", type=float, default=120.0, help="seconds per training run and per detector")
    run.add_argument("--sweep", action="store_true", help="run every severity level of each bug")
    run.add_argument("--with-peers", action="store_true", help="also score the wrapped peer tools (detectors/peers/)")
    run.add_argument("--executor", choices=["local", "ray"], default="local",
                     help="local process pool (default) or Ray tasks (pip install 'recipebench[ray]')")
    run.add_argument("--address", help="Ray cluster address (default: start a local Ray instance)")
    run.add_argument("--resume", action="store_true", help="continue the run recorded in OUT/results.sqlite")
    run.add_argument("--out", default=DEFAULT_OUT, help=f"output directory (default {DEFAULT_OUT}/)")
    run.add_argument("--cache-dir", default=".recipebench_cache", help="trace cache directory")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.set_defaults(fn=cmd_run)
    chk = sub.add_parser("check-bug", help="validate one bug and run it against every detector")
    chk.add_argument("bug", help="registered bug name or path/to/file.py:BugClass")
    chk.add_argument("--pipelines", "--pipeline", help="comma-separated pipelines (default: every applicable one)")
    chk.add_argument("--sweep", action="store_true", help="every severity level")
    ev = sub.add_parser("eval-detector", help="score one detector on the whole catalog beside the built-ins")
    ev.add_argument("detector", help="registered detector name or path/to/file.py:DetectorClass")
    ev.add_argument("--bugs", help="comma-separated bugs (default: the whole catalog)")
    ev.add_argument("--holdout", action="store_true",
                    help="also score leave-one-pipeline-out (threshold calibrated on the other pipelines)")
    for p, fn in ((chk, cmd_check_bug), (ev, cmd_eval_detector)):
        p.add_argument("--seeds", type=int, default=DEFAULT_SEEDS)
        p.add_argument("--workers", type=int, default=2)
        p.add_argument("--timeout", type=float, default=120.0)
        p.add_argument("--out", help="output directory (default: under --cache-dir)")
        p.add_argument("--cache-dir", default=".recipebench_cache")
        p.add_argument("--quiet", action="store_true")
        p.set_defaults(fn=fn)
    rep = sub.add_parser("report", help="re-render the reports from OUT/results.sqlite (no training)")
    rep.add_argument("--out", default=DEFAULT_OUT)
    rep.set_defaults(fn=cmd_report)
    ls = sub.add_parser("list", help="list bugs, detectors or pipelines")
    ls.add_argument("what", choices=["bugs", "detectors", "pipelines"])
    ls.add_argument("--format", choices=["table", "csv", "json"], default="table")
    ls.set_defaults(fn=cmd_list)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            return args.fn(args)
    except RegistryError as exc:
        print(f"recipebench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("recipebench: interrupted; finished cells are saved. Continue with `recipebench run --resume`.",
              file=sys.stderr)
        return 130
