"""The two user workflows besides the full matrix: check one bug against every
detector (``check-bug``) and evaluate one detector against the whole catalog
(``eval-detector``, optionally leave-one-pipeline-out with ``--holdout``).
Both read the tables that :func:`recipebench.harness.report.tables` computes from the database."""
from __future__ import annotations

import math

import pandas as pd
from tabulate import tabulate

from recipebench.bugs.base import BUGS, parse_variant
from recipebench.harness import stats

BASELINE = "metric_drop"


def _fmt(x, digits=3) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}g}"


def check_bug_text(name: str, runs: pd.DataFrame, cells: pd.DataFrame, impact: pd.DataFrame) -> str:
    cls = BUGS.get(name)
    mine = runs[runs.variant.map(lambda v: parse_variant(v)[0] == name)]
    out = [f"bug {name} ({cls.family}): {cls.description}", f"recipe step: {cls.recipe_step}",
           f"source: {cls.source}", ""]
    loud = mine[~mine.silent.astype(bool)]
    if len(loud):
        out.append(f"NOT SILENT on {len(loud)}/{len(mine)} runs:")
        out += [f"  {r.pipeline} {r.variant} seed {r.seed}: {r.error or '; '.join(r.warnings)}"
                for r in loud.itertuples()]
    else:
        out.append(f"silent: yes ({len(mine)} runs, no exception, no warning)")
    rows = [[r.pipeline, r.bug, f"{r.clean_mean:.3f}", f"{r.bug_mean:.3f}",
             f"{r.delta:+.3f} [{r.ci_low:+.3f}, {r.ci_high:+.3f}]", _fmt(r.p_value, 2),
             f"{r.symptom}: {_fmt(r.symptom_clean)} -> {_fmt(r.symptom_bug)} (p {_fmt(r.symptom_p, 2)})", r.verdict]
            for r in impact.itertuples()]
    out += ["", "impact on the primary metric (bug - clean, 95% CI, one-sided paired t-test over seeds):",
            tabulate(rows, headers=["pipeline", "variant", "clean", "bug", "delta [95% CI]", "p", "symptom", "verdict"])]
    c = cells[(cells.bug != "clean") & (cells.seeds > 0)].sort_values(["pipeline", "bug", "caught", "rate"],
                                                                         ascending=[True, True, False, False])
    rows = [[r.pipeline, r.bug, r.detector, f"{r.detections}/{r.seeds}", f"{r.clean_detections}/{r.clean_seeds}",
             _fmt(r.p_value, 2), "CAUGHT" if r.caught else ""] for r in c.itertuples()]
    out += ["", "detectors (detections on the bug vs on clean seeds, one-sided Fisher p):",
            tabulate(rows, headers=["pipeline", "variant", "detector", "bug k/n", "clean k/n", "p", ""])]
    return "\n".join(out)


def holdout_cells(verdicts: pd.DataFrame, detector: str) -> pd.DataFrame:
    """Leave-one-pipeline-out: the detector's threshold on its score is recalibrated as
    the largest score it gave on clean runs of the *other* pipelines, then applied to
    the held-out pipeline; cells are re-scored with the same Fisher rule."""
    v = verdicts[(verdicts.detector == detector) & verdicts.outcome.isin(stats.SCORED)].copy()
    rows = []
    for pipeline in sorted(v.pipeline.unique()):
        others = v[(v.pipeline != pipeline) & (v.variant == "clean")].score.dropna()
        held = v[v.pipeline == pipeline].copy()
        if others.empty:
            continue
        threshold = float(others.max())
        held["outcome"] = ["flagged" if s > threshold else "passed" for s in held.score]
        rows.append(stats.cells(held).assign(threshold=threshold))
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()


def suite_effect_text(name: str, verdicts: pd.DataFrame, impact: pd.DataFrame, recipe: set) -> list[str]:
    """The single-run suite view (``validity.single_run_suite``) of the detector alone,
    of the recipe suite without it and of the suite with it, per side: what adding it
    costs in false alarms and buys in detection."""
    from recipebench.harness import validity

    out = ["", "single-run view (share of legitimate runs with an alarm; of harmful-or-latent bug runs with one):"]
    for label, dets in ((f"{name} alone", {name}), ("recipe suite without it", recipe - {name}),
                        ("recipe suite with it", recipe | {name})):
        out += [f"  {label}:"] + [f"    {line}" for line in validity.suite_lines(
            validity.single_run_suite(verdicts, impact, dets))]
    return out


def eval_detector_text(name: str, cells: pd.DataFrame, verdicts: pd.DataFrame, holdout: bool,
                       impact: pd.DataFrame | None = None, recipe: set = frozenset()) -> str:
    from recipebench.detectors.base import DETECTORS

    cls = DETECTORS.get(name)
    mine = cells[cells.detector == name]
    bugs = mine[(mine.bug != "clean") & (mine.seeds > 0)]
    family = bugs.bug.map(lambda b: BUGS.get(parse_variant(b)[0]).family)
    out = [f"detector {name} ({cls.kind}, cost class {cls.cost}): {cls.description}",
           f"recipe step: {cls.recipe_step}", "",
           f"recall: {int(bugs.caught.sum())}/{len(bugs)} (pipeline, bug) pairs where it applies"]
    out += [f"  {fam}: {int(g.caught.sum())}/{len(g)}" for fam, g in bugs.groupby(family, sort=True)]
    clean = mine[(mine.bug == "clean") & (mine.seeds > 0)]
    rows = [[r.pipeline, f"{r.detections}/{r.seeds}", f"{r.rate:.2f} [{r.ci_low:.2f}, {r.ci_high:.2f}]"]
            for r in clean.itertuples()]
    out += ["", "false-positive rate on clean seeds (Wilson 95%):",
            tabulate(rows, headers=["pipeline", "clean k/n", "rate [95% CI]"])]
    own = verdicts[verdicts.detector == name]
    flagged = own[(own.outcome == "flagged") & (own.variant != "clean")]
    out += ["", f"cost: median {own.seconds.median():.3f} s per cell; time to detection: median "
                f"{_fmt(flagged.steps.median())} steps, {_fmt(flagged.seconds.median())} s"]
    caught = cells[cells.caught & (cells.bug != "clean")]
    by_pair = caught.groupby(["pipeline", "bug"]).detector.apply(set)
    only, missed = [], []
    for (p, b), dets in by_pair.items():
        others = dets - {name, BASELINE}
        if name in dets and not others:
            only.append(f"{p}/{b}")
        if name not in dets and others and ((mine.pipeline == p) & (mine.bug == b) & (mine.seeds > 0)).any():
            missed.append(f"{p}/{b} (caught by {', '.join(sorted(others))})")
    out += ["", "only this detector catches (among recipe detectors): " + (", ".join(only) or "none"),
            "misses that other detectors catch: " + ("; ".join(missed) or "none")]
    rows = []
    for d, g in cells[(cells.bug != "clean") & (cells.seeds > 0)].groupby("detector", sort=True):
        c = cells[(cells.detector == d) & (cells.bug == "clean") & (cells.seeds > 0)]
        rows.append([d + (" *" if d == name else ""), f"{int(g.caught.sum())}/{len(g)}", _fmt(c.rate.max(), 2)])
    if impact is not None:
        out += suite_effect_text(name, verdicts, impact, set(recipe))
    out += ["", "side by side with every detector (caught pairs / applicable, worst clean FP rate):",
            tabulate(rows, headers=["detector", "caught", "max FP"])]
    if holdout:
        h = holdout_cells(verdicts, name)
        if h.empty:
            out += ["", "holdout: needs clean scores on at least two pipelines"]
        else:
            hb, hc = h[h.bug != "clean"], h[h.bug == "clean"]
            rows = [[p, f"{g.threshold.iloc[0]:.4g}", f"{int(g[g.bug != 'clean'].caught.sum())}/{int((g.bug != 'clean').sum())}",
                     _fmt(g[g.bug == "clean"].rate.max(), 2)] for p, g in h.groupby("pipeline", sort=True)]
            out += ["", "leave-one-pipeline-out (threshold = max clean score on the other pipelines):",
                    tabulate(rows, headers=["held-out pipeline", "threshold", "caught", "clean FP rate"]),
                    f"holdout recall {int(hb.caught.sum())}/{len(hb)} vs native {int(bugs.caught.sum())}/{len(bugs)}; "
                    f"holdout worst FP {_fmt(hc.rate.max(), 2)}"]
    return "\n".join(out)
