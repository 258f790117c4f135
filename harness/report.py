"""Render the detection matrix from the results database (never retrains).

Writes ``cells.csv`` (long format, deterministic: no timings), ``impact.csv``,
``detectors.csv`` (recall, false-positive rate, cost, time to detection) and
``matrix.md`` (tabulate), each recording the configuration, versions and git revision.
Every file is replaced atomically (a failed write leaves the previous file, never a
truncated one); a run with jobs still to do is marked unfinished in matrix.md and
matrix.html ("N of M jobs done").
"""
from __future__ import annotations

import math
import platform
import subprocess
from pathlib import Path

import pandas as pd
from tabulate import tabulate

from recipebench.bugs.base import BUGS, parse_variant, symptom_higher_is_worse
from recipebench.detectors.base import DETECTORS
from recipebench.harness import stats, validity
from recipebench.harness.pipeline import get_pipeline
from recipebench.harness.cache import digest
from recipebench.harness.diskio import atomic_write
from recipebench.harness.store import FAILED_OUTCOMES, Store

BASELINE = "metric_drop"


def provenance() -> dict:
    import numpy, scipy, sklearn, torch  # noqa: E401

    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).parent, timeout=10).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        rev = "unknown"
    return {"git_revision": rev, "python": platform.python_version(), "torch": torch.__version__,
            "numpy": numpy.__version__, "scipy": scipy.__version__, "scikit-learn": sklearn.__version__,
            "pandas": pd.__version__}


def _select(df: pd.DataFrame, config: dict | None) -> pd.DataFrame:
    """Rows of the database that belong to ``config`` (the database also caches other runs)."""
    if not config:
        return df
    keep = (df.pipeline.isin(config["pipelines"]) & df.variant.isin(["clean", *config["variants"]])
            & df.seed.isin(config["seeds"]))
    if "detector" in df:
        keep &= df.detector.isin(config["detectors"])
    return df[keep].reset_index(drop=True)


def completion(config: dict | None, runs: pd.DataFrame, verdicts: pd.DataFrame) -> tuple[int, int]:
    """(jobs done, jobs planned) of the recorded run: a job, one (pipeline, variant,
    seed), is done when its run row and a verdict row of every selected detector are
    in the database (failed ones included: they finished)."""
    from types import SimpleNamespace

    from recipebench.harness.runner import applicable_variants

    if not config:
        return 0, 0
    wanted = SimpleNamespace(variants=tuple(config["variants"]))
    planned = {(p, v, s) for p in config["pipelines"] for v in applicable_variants(wanted, p) for s in config["seeds"]}
    have_run = set(zip(runs.pipeline, runs.variant, runs.seed))
    detectors = set(config["detectors"])
    scored = verdicts.groupby(["pipeline", "variant", "seed"]).detector.apply(set).to_dict() if len(verdicts) else {}
    done = sum(job in have_run and detectors <= scored.get(job, set()) for job in planned)
    return done, len(planned)


def failures(runs: pd.DataFrame, verdicts: pd.DataFrame, shown: int = 3) -> dict:
    """What failed in the selection ({} when nothing did): counts of ``error`` and
    ``timeout`` verdicts, failed training runs, and the first distinct messages as
    ``(pipeline/variant/seed detector, message)``, each one line."""
    bad = verdicts[verdicts.outcome.isin(FAILED_OUTCOMES)]
    broken = runs[runs.error.notna()]
    if not len(bad) and not len(broken):
        return {}
    first, seen = [], set()
    for r in bad.itertuples(index=False):
        message = " ".join(str((r.evidence or {}).get("message", r.outcome)).split())
        if message not in seen and len(first) < shown:
            seen.add(message)
            first.append((f"{r.pipeline}/{r.variant}/seed {r.seed} {r.detector}", message[:300]))
    return dict(verdicts=len(bad), all_verdicts=len(verdicts), outcomes=bad.outcome.value_counts().to_dict(),
                runs=len(broken), all_runs=len(runs), first=first)


def tables(verdicts: pd.DataFrame, runs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Cells, impact and detector summary of the configured run's rows."""
    cells = stats.cells(verdicts)
    names = {parse_variant(v)[0] for v in runs.variant} - {"clean"}
    symptoms = {n: BUGS.get(n).symptom for n in names if n in BUGS}
    worse = {n: symptom_higher_is_worse(BUGS.get(n)) for n in names if n in BUGS}
    metrics = {p: get_pipeline(p).metric for p in runs.pipeline.unique()}
    impact = stats.impact(runs, symptoms, worse, metrics)
    summary = detector_summary(cells, verdicts).merge(validity.out_of_sample(cells, verdicts), on="detector", how="left")
    return validity.with_split(cells, "bug"), impact, summary


def detector_summary(cells: pd.DataFrame, verdicts: pd.DataFrame) -> pd.DataFrame:
    """Per detector: pairs caught / applicable, worst clean FP rate, cost, time to detection."""
    rows = []
    for d, g in cells.groupby("detector", sort=True):
        bugs = g[(g.bug != "clean") & (g.seeds > 0) & ~validity.control_mask(g.bug)]
        clean = g[(g.bug == "clean") & (g.seeds > 0)]
        flagged = verdicts[(verdicts.detector == d) & (verdicts.outcome == "flagged") & (verdicts.variant != "clean")
                           & ~validity.control_mask(verdicts.variant)]
        own = verdicts[verdicts.detector == d]
        scored = own[own.outcome.isin(stats.SCORED)]
        cls = DETECTORS.get(d) if d in DETECTORS else None
        rows.append(dict(detector=d, recipe_step=getattr(cls, "recipe_step", "?"), kind=getattr(cls, "kind", "?"),
                         cost_class=getattr(cls, "cost", math.nan), caught=int(bugs.caught.sum()), applicable=len(bugs),
                         recall=bugs.caught.mean() if len(bugs) else math.nan,
                         max_fp_rate=clean.rate.max() if len(clean) else math.nan,
                         mean_fp_rate=clean.rate.mean() if len(clean) else math.nan,
                         advice_rate=scored.outcome.eq("advice").mean() if len(scored) else math.nan,
                         median_seconds=float(own.seconds.median()) if len(own) else math.nan,
                         median_steps_to_detection=float(flagged.steps.median()) if len(flagged) else math.nan,
                         median_seconds_to_detection=float(flagged.seconds.median()) if len(flagged) else math.nan,
                         errors=int(g.errors.sum())))
    return pd.DataFrame(rows)


def _cell(r) -> str:
    if r.seeds == 0:
        return "error" if r.errors else "n/a"
    mark = " **✓**" if r.caught else ""
    return f"{r.detections}/{r.seeds}{mark}"


def unfinished_note(done: int, planned: int, out: Path) -> str | None:
    """The mark of a run with jobs still to do; None for a finished one."""
    if done >= planned:
        return None
    return (f"UNFINISHED RUN: {done} of {planned} jobs done; cells, rates and impact cover the finished jobs "
            f"only. Finish it with `recipebench run --resume --out {out}`.")


def suite_view(cells: pd.DataFrame, impact: pd.DataFrame, verdicts: pd.DataFrame) -> pd.DataFrame:
    """The single-run suite view over the run's recipe detectors (peers and the trivial
    baseline left out)."""
    recipe = set(cells.detector) - _peers(cells) - {BASELINE}
    return validity.single_run_suite(verdicts, impact, recipe)


def matrix_markdown(cells: pd.DataFrame, impact: pd.DataFrame, summary: pd.DataFrame, meta: dict,
                    unfinished: str | None = None, suite: pd.DataFrame | None = None) -> str:
    out = ["# recipebench detection matrix", ""]
    if unfinished:
        out += [f"**{unfinished}**", ""]
    if suite is not None:
        out += validity.suite_markdown(suite, "recipe detector")
    cfg = meta.get("config", {})
    out += [f"Command: `{meta.get('command', '?')}`  ",
            f"Seeds: {len(cfg.get('seeds', []))} · pipelines: {', '.join(cfg.get('pipelines', []))}  ",
            "Versions: " + ", ".join(f"{k} {v}" for k, v in meta.get("provenance", {}).items()), "",
            "Cell = detections k/n over seeds; **✓** = caught (one-sided Fisher exact p < 0.05 against the "
            "detector's rate on clean seeds of the same pipeline); `clean` row = false positives; n/a = not "
            "applicable. See docs/reading-the-matrix.md.", ""]
    out += validity.headline_markdown(summary[validity.COLUMNS], cells, impact, BASELINE)
    detectors = sorted(cells.detector.unique())
    for pipeline, g in cells.groupby("pipeline", sort=True):
        shown = {(r.bug, r.detector): _cell(r) for r in g.itertuples(index=False)}
        rows = [[bug] + [shown.get((bug, d), "") for d in detectors]
                for bug in ["clean"] + sorted(set(g.bug) - {"clean"})]
        out += [f"## {pipeline}", "", tabulate(rows, headers=["bug"] + detectors, tablefmt="github"), ""]
    out += ["## Detectors", "", "recall = (pipeline, bug) pairs caught / pairs where the detector applies; "
            "FP = detection rate on clean seeds (worst pipeline); advice_rate = share of scored runs where the "
            "recipe's advice applies (counted as passes: neither a detection nor a false positive).", "",
            tabulate(summary.round(3).to_dict("records"), headers="keys", tablefmt="github"), ""]
    out += ["## Bugs: caught by whom", "", _bug_summary(cells, summary), ""]
    out += ["## Impact of each bug", "", "delta = bug mean - clean mean of the primary metric, 95% CI; p = one-sided "
            "t-test, paired by seed (column `test`: 'paired t' when bug and clean runs share seeds, else 'Welch t'); "
            "latent = metric holds but the symptom probe is significantly worse.", "",
            tabulate(impact.round(4).to_dict("records"), headers="keys", tablefmt="github"), ""]
    return "\n".join(out)


def _peers(cells: pd.DataFrame) -> set[str]:
    """The wrapped third-party tools among the matrix's detectors."""
    return {d for d in cells.detector.unique() if d in DETECTORS and DETECTORS.get(d).peer}


def _bug_summary(cells: pd.DataFrame, summary: pd.DataFrame) -> str:
    """Per (pipeline, bug): which recipe detectors catch it, the cheapest, whether the
    trivial baseline does, and (when peers ran) which peer tools do."""
    cost = summary.set_index("detector").median_seconds.to_dict()
    peer = _peers(cells)
    rows = []
    bugs = cells[(cells.bug != "clean") & ~validity.control_mask(cells.bug)]
    for (pipeline, bug), g in bugs.groupby(["pipeline", "bug"], sort=True):
        caught = g[g.caught]
        recipe = caught[(caught.detector != BASELINE) & ~caught.detector.isin(peer)]
        cheapest = min(recipe.detector, key=lambda d: (cost.get(d, math.inf), d)) if len(recipe) else "-"
        baseline = bool(caught.detector.eq(BASELINE).any())
        row = [pipeline, bug, len(recipe) > 0, baseline, ", ".join(sorted(recipe.detector)) or "-", cheapest]
        if peer:
            row.append(", ".join(sorted(set(caught.detector) & peer)) or "-")
        rows.append(row)
    missed = [f"{r[0]}/{r[1]}" for r in rows if r[2] and not r[3]]
    headers = ["pipeline", "bug", "caught by a recipe detector", f"caught by {BASELINE}",
               "recipe detectors that catch it", "cheapest"] + (["peers that catch it"] if peer else [])
    table = tabulate(rows, headers=headers, tablefmt="github")
    note = ("Missed by the trivial baseline but caught by a recipe detector: " + (", ".join(missed) or "none"))
    return table + "\n\n" + note


def severity_table(cells: pd.DataFrame, impact: pd.DataFrame) -> pd.DataFrame:
    """Detection rate per detector and metric delta per severity level, for every
    (pipeline, bug) run at two or more severities (``--sweep``)."""
    c = cells[cells.bug != "clean"].assign(name=lambda d: d.bug.map(lambda v: parse_variant(v)[0]),
                                           severity=lambda d: d.bug.map(lambda v: parse_variant(v)[1] or "default"))
    rows = []
    for (pipeline, name), g in c.groupby(["pipeline", "name"], sort=True):
        levels = [s for s in BUGS.get(name).severities if s in set(g.severity)] if name in BUGS else []
        if len(levels) < 2:
            continue
        knob = BUGS.get(name).severities
        delta = impact.set_index(["pipeline", "bug"]).delta
        for sev in levels:
            variant = f"{name}@{sev}"
            row = dict(pipeline=pipeline, bug=name, severity=sev, level=knob[sev],
                       metric_delta=float(delta.get((pipeline, variant), math.nan)))
            for r in g[(g.severity == sev) & (g.seeds > 0)].itertuples():
                row[r.detector] = r.rate
            rows.append(row)
    return pd.DataFrame(rows)


def _severity_markdown(sev: pd.DataFrame) -> str:
    out = []
    for (pipeline, bug), g in sev.groupby(["pipeline", "bug"], sort=True):
        dets = [d for d in g.columns[5:] if g[d].fillna(0).max() > 0]
        rows = [[r["severity"], r["level"], f"{r['metric_delta']:+.3f}"] + [f"{r[d]:.1f}" if r[d] == r[d] else "n/a" for d in dets]
                for _, r in g.iterrows()]
        out += [f"### {pipeline} / {bug}", "",
                tabulate(rows, headers=["severity", "knob", "metric delta"] + dets, tablefmt="github"), ""]
    return "\n".join(out)


def peers_markdown(cells: pd.DataFrame, verdicts: pd.DataFrame) -> str:
    """Per bug family: (pipeline, bug) pairs caught only by peer tools, only by recipe
    detectors, by both; and the cost: a peer's median seconds per run against all
    recipe detectors together on the same run."""
    peer = _peers(cells)
    if not peer:
        return ""
    caught = cells[cells.caught & (cells.bug != "clean") & (cells.detector != BASELINE)]
    by_pair = caught.groupby(["pipeline", "bug"]).detector.apply(set)
    pairs = cells[cells.bug != "clean"][["pipeline", "bug"]].drop_duplicates()
    pairs = pairs[~validity.control_mask(pairs.bug)]
    data_stage = {d for d in cells.detector.unique() if d in DETECTORS and DETECTORS.get(d).stage == "data"}
    rows, recall = [], []
    for family, g in pairs.groupby(pairs.bug.map(lambda b: BUGS.get(parse_variant(b)[0]).family), sort=True):
        only_peer, only_recipe, both = [], [], 0
        found = [by_pair.get((r.pipeline, r.bug), set()) for r in g.itertuples()]
        for r, dets in zip(g.itertuples(), found):
            p, q = bool(dets & peer), bool(dets - peer)
            both += p and q
            if p and not q:
                only_peer.append(f"{r.pipeline}/{r.bug} ({', '.join(sorted(dets))})")
            elif q and not p:
                only_recipe.append(f"{r.pipeline}/{r.bug}")
        rows.append([family, len(g), both, ", ".join(only_peer) or "-", len(only_recipe)])
        recall.append([family, len(g)] + [f"{sum(bool(d & side) for d in found)}/{len(g)}"
                                          for side in (data_stage, set(cells.detector) - peer - {BASELINE})]
                      + [f"{sum(p in d for d in found)}/{len(g)}" for p in sorted(peer)])
    per_run = verdicts.groupby(["pipeline", "variant", "seed"])
    recipe = per_run.apply(lambda g: g[~g.detector.isin(peer)].seconds.sum(), include_groups=False).median()
    cost = {d: verdicts[verdicts.detector == d].seconds.median() for d in sorted(peer)}
    costs = "; ".join(f"{d} {c:.2f} s ({c / recipe:.2g}x)" if recipe > 0 else f"{d} {c:.2f} s" for d, c in cost.items())
    return "\n".join(["## Peers vs recipe detectors", "",
                      f"Median seconds per run (in brackets: times the cost of all recipe detectors together, "
                      f"{recipe:.2f} s): {costs}. The shared trace itself is not counted on either side.", "",
                      tabulate(rows, headers=["family", "pairs", "caught by both", "only by a peer",
                                              "only by recipe detectors (count)"], tablefmt="github"), "",
                      "Pairs caught per bug family: the recipe's data detectors (stage `data`: become one with "
                      "the data), all recipe detectors (without the trivial baseline), and each peer.", "",
                      tabulate(recall, headers=["family", "pairs", "recipe data detectors", "all recipe detectors"]
                               + sorted(peer), tablefmt="github"), "",
                      _data_bugs_markdown(cells, by_pair, peer)])


def _data_bugs_markdown(cells: pd.DataFrame, by_pair: pd.Series, peer: set) -> str:
    """One row per (pipeline, data-family bug): the recipe's data detectors ("become one
    with the data", stage ``data``) that catch it, the other recipe detectors that do,
    and each peer's detections k/n (a data-quality tool is what practitioners reach for)."""
    bugs = cells[(cells.bug != "clean") & ~validity.control_mask(cells.bug)]
    data = bugs[bugs.bug.map(lambda b: BUGS.get(parse_variant(b)[0]).family == "data")]
    stage = {d: DETECTORS.get(d).stage for d in cells.detector.unique() if d in DETECTORS}
    peers = sorted(peer)
    rows = []
    for (pipeline, bug), g in data.groupby(["pipeline", "bug"], sort=True):
        dets = by_pair.get((pipeline, bug), set()) - peer
        own = g.set_index("detector")
        rows.append([pipeline, bug, ", ".join(sorted(d for d in dets if stage.get(d) == "data")) or "-",
                     ", ".join(sorted(d for d in dets if stage.get(d) != "data")) or "-"]
                    + [_cell(own.loc[p]) if p in own.index else "" for p in peers])
    if not rows:
        return ""
    return "\n".join(["### Data bugs: recipe data detectors vs peers", "",
                      tabulate(rows, headers=["pipeline", "bug", "recipe data detectors", "other recipe detectors"]
                               + peers, tablefmt="github"), ""])


def write_reports(store: Store, out: Path, html: bool = True) -> dict:
    config = store.meta().get("config")
    verdicts, runs = _select(store.verdicts(), config), _select(store.runs(), config)  # read once, used thrice
    cells, impact, summary = tables(verdicts, runs)
    done, planned = completion(config, runs, verdicts)
    unfinished = unfinished_note(done, planned, out)
    out.mkdir(parents=True, exist_ok=True)
    fmt = dict(index=False, float_format="%.6g", lineterminator="\n")
    atomic_write(out / "cells.csv", cells.to_csv(**fmt))
    atomic_write(out / "impact.csv", impact.to_csv(**fmt))
    atomic_write(out / "detectors.csv",
                 summary.drop(columns=["median_seconds", "median_seconds_to_detection"]).to_csv(**fmt))
    suite = suite_view(cells, impact, verdicts)
    atomic_write(out / "suite.csv", suite.to_csv(**fmt))
    md = matrix_markdown(cells, impact, summary, store.meta(), unfinished, suite) + peers_markdown(cells, verdicts)
    sev = severity_table(cells, impact)
    if len(sev):
        atomic_write(out / "severity.csv", sev.to_csv(**fmt))
        md += ("\n## Severity sweeps\n\nDetection rate of each detector that fires at some level, per severity "
               "(knob = the bug's own parameter), with the change of the primary metric. The smallest level at "
               "which a detector's rate is high is the smallest effect it can see.\n\n" + _severity_markdown(sev))
    atomic_write(out / "matrix.md", md)
    # matrix.html draws ~100 figures (most of a warm rerun's time): redraw only when a row changed
    fingerprint = digest(sorted(store.run_keys().items()), sorted(store.verdict_keys().items()), config)
    if html and (not (out / "matrix.html").exists() or store.meta().get("html_fingerprint") != fingerprint):
        from recipebench.harness.html import render_html

        page = render_html(cells, impact, runs, verdicts, store.meta(), sev, unfinished,
                           validity.suite_lines(suite))
        atomic_write(out / "matrix.html", page)
        store.set_meta(html_fingerprint=fingerprint)
    return {"cells": cells, "impact": impact, "detectors": summary, "suite": suite, "progress": (done, planned),
            "failed": failures(runs, verdicts)}

