"""The population suite's reports: matrix.md (the single-run headline first), cells.csv,
draws.csv; the rows stay in results.sqlite."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from tabulate import tabulate

from recipebench.harness import stats, validity
from recipebench.harness.diskio import atomic_write

BASELINE = "metric_drop"


def detector_rates(verdicts: pd.DataFrame, impact: pd.DataFrame) -> pd.DataFrame:
    """Per detector: flagged / scored clean runs (false alarm, Wilson upper bound), flagged
    / scored harmful-or-latent bug runs (detection), error cells, and the draws it fires on."""
    bad = {(p, b) for p, b, v in zip(impact.pipeline, impact.bug, impact.verdict) if v in ("harmful", "latent")}
    rows = []
    for d, g in verdicts.groupby("detector", sort=True):
        clean = g[(g.variant == "clean") & g.outcome.isin(stats.SCORED)]
        bugs = g[np.array([(p, v) in bad for p, v in zip(g.pipeline, g.variant)], bool) & g.outcome.isin(stats.SCORED)]
        k, n = int(clean.outcome.eq("flagged").sum()), len(clean)
        kb, nb = int(bugs.outcome.eq("flagged").sum()), len(bugs)
        fired = sorted(clean[clean.outcome.eq("flagged")].pipeline)
        rows.append(dict(detector=d, clean_flagged=k, clean_scored=n, false_alarm=k / n if n else math.nan,
                         false_alarm_hi=stats.wilson(k, n)[1] if n else math.nan, bug_flagged=kb, bug_scored=nb,
                         detection=kb / nb if nb else math.nan, errors=int(g.outcome.isin(["error", "timeout"]).sum()),
                         fires_on=", ".join(fired[:6]) + (f" +{len(fired) - 6}" if len(fired) > 6 else "")))
    return pd.DataFrame(rows)


def _fmt(df: pd.DataFrame) -> str:
    out = df.copy()
    for c in out.columns:
        if out[c].dtype.kind == "f":
            out[c] = out[c].map(lambda v: "-" if pd.isna(v) else f"{v:.3f}")
    return tabulate(out.to_dict("records"), headers="keys", tablefmt="github")


def write_population_reports(store, out: Path) -> dict:
    from recipebench.harness.population.suite import impact as impact_of

    meta = store.meta()
    pop = meta.get("population", {})
    runs, verdicts = store.runs(), store.verdicts()
    draws = pd.DataFrame(pop.get("draws_detail", []))
    noise = dict(zip(draws.name, draws.noise)) if len(draws) else {}
    impact = impact_of(runs, noise)
    recipe = set(verdicts.detector) - {BASELINE}
    suite = validity.single_run_suite(verdicts, impact, recipe)
    rates = detector_rates(verdicts[verdicts.detector.isin(recipe)], impact)
    verdict_of = {(p, b): v for p, b, v in zip(impact.pipeline, impact.bug, impact.verdict)}
    cells = verdicts[["pipeline", "variant", "seed", "detector", "outcome", "score", "seconds"]].copy()
    cells.insert(1, "side", pop.get("side", ""))
    cells.insert(3, "bug_verdict", [verdict_of.get((p, v), "clean" if v == "clean" else "-")
                                    for p, v in zip(cells.pipeline, cells.variant)])
    fmt = dict(index=False, float_format="%.6g", lineterminator="\n")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "cells.csv", cells.to_csv(**fmt))
    if len(draws):
        keep = ["name", "seed", "task", "bug", "baseline", "noise", "metrics", "cpu_seconds"]
        table = draws[keep].assign(metrics=draws.metrics.map(lambda m: " ".join(f"{v:.4f}" for v in m)))
        table = table.merge(impact[["pipeline", "verdict", "drop"]].rename(columns={"pipeline": "name"}), how="left")
        from recipebench.harness.population import draw, seed_of

        table["description"] = [draw(seed_of(n)).description.split(": ", 1)[-1] for n in table.name]
        atomic_write(out / "draws.csv", table.to_csv(**fmt))
    side = pop.get("side", "?")
    cand, adm = pop.get("candidates", 0), pop.get("admitted", 0)
    clean_runs = runs[runs.variant == "clean"]
    per_draw = runs.groupby("pipeline").seconds.sum()
    lines = [f"# Population suite: {adm} admitted {side} draws", "",
             f"Command: `{meta.get('command', '')}`  ",
             f"Revision: {meta.get('provenance', {}).get('git_revision', '?')}", ""]
    lines += validity.suite_markdown(suite[suite.side == side], "recipe detector on a generated draw")
    counts = impact.verdict.value_counts().to_dict() if len(impact) else {}
    lines += ["Bug runs by impact (one seed, `harness/population/suite.py`): "
              + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) + ".", "",
              "## How to read it", "",
              "- **Draws**: generator seeds of the " + side + " side in increasing order, each admitted only if it "
              "trains (true metric significantly above its trivial baseline at training seeds 0 and 1, p < 1e-3, and "
              "at least 20% of the way from the baseline to 1; `harness/population/admission.py`). "
              f"Admitted {adm} of {cand} candidates ({adm / cand:.0%})." if cand else "",
              "- **Runs**: each draw once clean at training seed 0 and once with one applicable catalog bug drawn "
              "at random (seeded; calibration side: calibration bugs only).",
              "- **Harmful-or-latent** (one seed, no significance test possible): the bug run's true metric is below "
              "the clean run's by more than the draw's own noise, max(2 |m0 - m1|, 0.02) over its two admission "
              "seeds, or the bug's symptom probe is worse than clean by more than 10% of the larger magnitude.",
              f"- **Time**: clean training {clean_runs.seconds.median():.2f} s median per draw (one thread); "
              f"training + probes of both runs {per_draw.median():.1f} s median per draw; the whole run "
              f"{meta.get('population_seconds', float('nan')):.0f} s wall on the workers given "
              f"(admission {pop.get('admission_seconds', float('nan')):.0f} s).", "",
              "## Per detector", "",
              "False alarm = clean draw runs it flags / clean draw runs it scores (Wilson 95% upper bound); "
              "detection = harmful-or-latent bug runs it flags / those it scores; `fires_on` = the clean draws it "
              "flags (draws.csv has each one's recipe).", "", _fmt(rates), ""]
    if pop.get("rejected"):
        rej = pd.DataFrame(pop["rejected"])
        lines += ["## Rejected candidates", "", _fmt(rej.groupby("task").size().rename("rejected").reset_index()), ""]
    atomic_write(out / "matrix.md", "\n".join(lines) + "\n")
    return dict(suite=suite, impact=impact, detectors=rates, cells=cells, runs=runs, verdicts=verdicts)
