"""Out-of-sample scores: which runs are calibration, test or negative control, and each
detector's recall and false-positive rate on each side.

The pipeline zoo is split once (``Pipeline.partition``): thresholds and design choices
may look at *calibration* pipelines only; *test* pipelines are held out. Negative
controls (``bugs/controls.py``) are legitimate variants: their runs are false alarms
when flagged, counted on the side of their pipeline (a control of a calibration
pipeline is calibration material: thresholds were set on it). ``test_fpr`` pools the
clean and control runs of test pipelines; ``test_recall`` counts the (test pipeline,
bug) pairs a detector catches.

The headline is the **single-run suite view** (:func:`single_run_suite`): what a user
who runs every recipe detector once on their code sees — the share of legitimate runs
with at least one alarm, and the share of harmful-or-latent bug runs with one.
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


def legitimate(verdicts: pd.DataFrame) -> pd.DataFrame:
    """The verdicts of runs that are not bugs (clean runs and negative controls), with
    the ``side`` of their pipeline."""
    v = verdicts[(verdicts.variant == "clean") | control_mask(verdicts.variant)]
    return v.assign(side=v.pipeline.map({p: partition(p) for p in v.pipeline.unique()}))


def false_alarms(verdicts: pd.DataFrame) -> pd.DataFrame:
    """Per (detector, side): flagged / scored runs among the runs that are not bugs
    (clean and control runs), each on its pipeline's side."""
    v = legitimate(verdicts[verdicts.outcome.isin(stats.SCORED)])
    v = v.assign(flag=v.outcome.eq("flagged"))
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
           "`test_fpr` pools the clean and negative-control runs of test pipelines; `test_fpr_hi` is its "
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


SUITE_COLUMNS = ["side", "legit_runs", "legit_alarmed", "false_alarm", "false_alarm_hi", "bug_runs", "bug_alarmed",
                 "detection", "detection_lo", "worst_clean_rate", "worst_clean_cell"]


def runs_alarmed(verdicts: pd.DataFrame, detectors: set) -> pd.DataFrame:
    """One row per run (pipeline, variant, seed): whether any of ``detectors`` flagged it."""
    v = verdicts[verdicts.detector.isin(detectors)]
    return (v.assign(flag=v.outcome.eq("flagged")).groupby(["pipeline", "variant", "seed"], as_index=False)
            .agg(alarm=("flag", "any")))


def single_run_suite(verdicts: pd.DataFrame, impact: pd.DataFrame, detectors: set) -> pd.DataFrame:
    """The single-run suite view, per side (calibration, test): of the legitimate runs
    (clean + negative controls), the share on which at least one of ``detectors``
    flags (false alarm, with its Wilson 95% upper bound); of the runs of
    harmful-or-latent (pipeline, bug) pairs, the share on which one flags (detection,
    with its Wilson lower bound); and the worst per-(pipeline, detector) flag rate over
    clean seeds. Severity variants (``bug@level``) count under their bug's impact label."""
    runs = runs_alarmed(verdicts, detectors)
    runs = runs.assign(side=runs.pipeline.map({p: partition(p) for p in runs.pipeline.unique()}))
    legit = runs[(runs.variant == "clean") | control_mask(runs.variant)]
    bad_pairs = set() if not len(impact) else {  # a negative control may lower the metric: never a bug
        (p, b) for p, b, v in zip(impact.pipeline, impact.bug, impact.verdict)
        if v in ("harmful", "latent") and not is_control(b)}
    bugs = runs[[(p, v) in bad_pairs for p, v in zip(runs.pipeline, runs.variant)]]
    clean = verdicts[(verdicts.variant == "clean") & verdicts.detector.isin(detectors)
                     & verdicts.outcome.isin(stats.SCORED)]
    rates = clean.assign(flag=clean.outcome.eq("flagged")).groupby(["pipeline", "detector"]).flag.mean()
    rows = []
    for side in ("calibration", "test"):
        lg, bg = legit[legit.side == side], bugs[bugs.side == side]
        side_rates = rates[[partition(p) == side for p, _ in rates.index]] if len(rates) else rates
        worst = side_rates.idxmax() if len(side_rates) else None
        k, n, kb, nb = int(lg.alarm.sum()), len(lg), int(bg.alarm.sum()), len(bg)
        rows.append(dict(side=side, legit_runs=n, legit_alarmed=k, false_alarm=k / n if n else math.nan,
                         false_alarm_hi=stats.wilson(k, n)[1] if n else math.nan, bug_runs=nb, bug_alarmed=kb,
                         detection=kb / nb if nb else math.nan, detection_lo=stats.wilson(kb, nb)[0] if nb else math.nan,
                         worst_clean_rate=float(side_rates.max()) if worst is not None else math.nan,
                         worst_clean_cell="/".join(worst) if worst is not None else "-"))
    return pd.DataFrame(rows, columns=SUITE_COLUMNS)


def suite_lines(suite: pd.DataFrame) -> list[str]:
    """One sentence per side of the single-run suite view (sides without runs left out)."""
    pct = lambda v: "-" if pd.isna(v) else f"{v:.1%}"  # noqa: E731
    return [f"{r.side}: false alarm {r.legit_alarmed}/{r.legit_runs} = {pct(r.false_alarm)} (upper "
            f"{pct(r.false_alarm_hi)}); detection {r.bug_alarmed}/{r.bug_runs} = {pct(r.detection)} (lower "
            f"{pct(r.detection_lo)}); worst clean (pipeline, detector) flag rate {pct(r.worst_clean_rate)} "
            f"({r.worst_clean_cell})" for r in suite.itertuples() if r.legit_runs or r.bug_runs]


def suite_markdown(suite: pd.DataFrame, what: str) -> list[str]:
    """The single-run suite view as the report's first lines."""
    out = [f"## Headline: one run, every {what}", "",
           "A user runs every recipe detector once on their code (`metric_drop`, the trivial baseline, and peer "
           "tools left out). False alarm = legitimate runs (clean and negative controls) with at least one flag; "
           "detection = runs of harmful-or-latent bugs with at least one flag; Wilson 95% bounds. Test = held-out "
           "pipelines nobody tuned on.", ""]
    return out + [f"- **{line.replace(':', '**:', 1)}" for line in suite_lines(suite)] + [""]
