"""Out-of-sample scores: which runs are calibration, test or negative control, and each
detector's recall and false-positive rate on each side.

The pipeline zoo is split once (``Pipeline.partition``): thresholds and design choices
may look at *calibration* pipelines only; *test* pipelines are held out. Negative
controls (``bugs/controls.py``) are legitimate variants: their runs are false alarms
when flagged. The headline is out of sample: ``test_fpr`` pools the clean runs of test
pipelines with every control run, and ``test_recall`` counts the (test pipeline, bug)
pairs a detector catches.
"""
from __future__ import annotations

import math

import pandas as pd
from tabulate import tabulate

from recipebench.bugs.base import BUGS, parse_variant
from recipebench.harness import stats
from recipebench.harness.pipeline import PIPELINES, get_pipeline

COLUMNS = ["detector", "calib_recall", "calib_fpr", "test_recall", "test_fpr", "test_fpr_hi", "calib_pairs",
           "calib_clean_runs", "test_pairs", "test_clean_runs"]  # out_of_sample's table


def is_control(variant: str) -> bool:
    name = parse_variant(variant)[0]
    return name != "clean" and name in BUGS and BUGS.get(name).control


def control_mask(variants: pd.Series) -> pd.Series:
    """Boolean mask of the negative-control variants (boolean even when empty)."""
    return variants.map({v: is_control(v) for v in variants.unique()}).astype(bool)


def partition(pipeline: str) -> str:
    """A pipeline's side of the split; an unknown (plugin) pipeline counts as test."""
    return get_pipeline(pipeline).partition if pipeline in PIPELINES else "test"


def with_split(df: pd.DataFrame, variant_column: str) -> pd.DataFrame:
    """``df`` with a ``split`` column after ``pipeline`` (cells: ``bug``; verdicts: ``variant``)."""
    parts = {p: partition(p) for p in df.pipeline.unique()}
    split = [("control" if is_control(v) else parts[p]) for p, v in zip(df.pipeline, df[variant_column])]
    out = df.copy()
    out.insert(out.columns.get_loc("pipeline") + 1, "split", split)
    return out


def false_alarms(verdicts: pd.DataFrame) -> pd.DataFrame:
    """Per (detector, side): flagged / scored runs among the runs that are not bugs:
    clean runs of calibration pipelines ("calibration"), clean runs of test pipelines
    plus every negative-control run ("test")."""
    v = verdicts[verdicts.outcome.isin(stats.SCORED)]
    v = v[(v.variant == "clean") | control_mask(v.variant)]
    parts = {p: partition(p) for p in v.pipeline.unique()}
    side = ["test" if var != "clean" else parts[p] for p, var in zip(v.pipeline, v.variant)]  # var: clean or a control
    v = v.assign(side=side, flag=v.outcome.eq("flagged"))
    return v.groupby(["detector", "side"]).agg(runs=("flag", "size"), flagged=("flag", "sum")).reset_index()


def out_of_sample(cells: pd.DataFrame, verdicts: pd.DataFrame) -> pd.DataFrame:
    """Per detector: calibration vs test recall over (pipeline, bug) pairs (controls
    excluded) and false-positive rate over runs that are not bugs, with the Wilson
    95% upper bound of the test rate."""
    cells = cells[~control_mask(cells.bug) & (cells.bug != "clean") & (cells.seeds > 0)]
    alarms = false_alarms(verdicts).set_index(["detector", "side"])
    sides = cells.pipeline.map({p: partition(p) for p in cells.pipeline.unique()})
    rows = []
    for d in sorted(set(verdicts.detector)):
        row = {"detector": d}
        for side, prefix in (("calibration", "calib"), ("test", "test")):
            pairs = cells[(cells.detector == d) & (sides == side)]
            row[f"{prefix}_recall"] = pairs.caught.mean() if len(pairs) else math.nan
            row[f"{prefix}_pairs"] = len(pairs)
            n, k = (int(alarms.loc[(d, side)].runs), int(alarms.loc[(d, side)].flagged)) if (d, side) in alarms.index \
                else (0, 0)
            row[f"{prefix}_fpr"] = k / n if n else math.nan
            row[f"{prefix}_clean_runs"] = n
        n, k = row["test_clean_runs"], round(row["test_fpr"] * n) if n else 0
        row["test_fpr_hi"] = stats.wilson(k, n)[1] if n else math.nan
        rows.append(row)
    return pd.DataFrame(rows, columns=COLUMNS)


def headline_markdown(table: pd.DataFrame, cells: pd.DataFrame, impact: pd.DataFrame, baseline: str) -> list[str]:
    """The report's opening section: in-sample beside out-of-sample, per detector, and
    the share of harmful-or-latent test pairs caught by a non-baseline detector."""
    pipelines = sorted(set(cells.pipeline))
    calib = [p for p in pipelines if partition(p) == "calibration"]
    test = [p for p in pipelines if partition(p) == "test"]
    out = ["## Out of sample: calibration vs test", "",
           f"Calibration pipelines (thresholds may look at these): {', '.join(calib) or '-'}  ",
           f"Test pipelines (held out, never tuned on): {', '.join(test) or '-'}  ",
           "`test_fpr` pools clean runs of test pipelines and every negative-control run; `test_fpr_hi` is its "
           "Wilson 95% upper bound. Recall = (pipeline, bug) pairs caught / pairs where the detector applies.", ""]
    fmt = table.copy()
    for c in ("calib_recall", "calib_fpr", "test_recall", "test_fpr", "test_fpr_hi"):
        fmt[c] = fmt[c].map(lambda v: "-" if pd.isna(v) else f"{v:.2f}")
    out += [tabulate(fmt.to_dict("records"), headers="keys", tablefmt="github"), ""]
    bad = impact[impact.verdict.isin(["harmful", "latent"]) & impact.pipeline.isin(test)
                 & ~control_mask(impact.bug)] if len(impact) else impact
    if len(bad):
        caught = cells[cells.caught & (cells.detector != baseline)]
        hit = {(p, b) for p, b in zip(caught.pipeline, caught.bug)}
        n = sum((p, b) in hit for p, b in zip(bad.pipeline, bad.bug))
        missed = sorted(f"{p}/{b}" for p, b in zip(bad.pipeline, bad.bug) if (p, b) not in hit)
        out += [f"Harmful-or-latent test pairs caught by at least one non-baseline detector: {n}/{len(bad)} "
                f"({n / len(bad):.0%}). Missed: {', '.join(missed) or 'none'}.", ""]
    return out
