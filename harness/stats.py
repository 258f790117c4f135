"""Scoring: detection rates with Wilson intervals, a one-sided Fisher exact test
against the detector's clean rate, and bug impact over seeds (a paired t-test: the
clean and buggy run of a seed share initialization and data order; Welch's t-test
when the seeds differ).

``caught`` is p < 0.05 for "detection rate above clean rate". The test is monotone:
with the clean counts fixed, one more detection can only lower p, so more
detections never un-catch a bug. All statistics come from scipy.
"""
from __future__ import annotations

import math
import warnings
from functools import lru_cache

import numpy as np
import pandas as pd
from scipy import stats

ALPHA = 0.05
SCORED = ("flagged", "passed", "advice")  # advice: a pass the recipe has advice for (detectors/base.py)


@lru_cache(maxsize=None)  # a report asks for a few thousand intervals over a few dozen distinct (k, n)
def wilson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    if n == 0:
        return (math.nan, math.nan)
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
    return (float(ci.low), float(ci.high))


@lru_cache(maxsize=None)
def fisher_greater(k: int, n: int, k_clean: int, n_clean: int) -> float:
    """One-sided p-value that the bug's detection rate exceeds the clean rate."""
    if n == 0 or n_clean == 0:
        return math.nan
    return float(stats.fisher_exact([[k, n - k], [k_clean, n_clean - k_clean]], alternative="greater")[1])


def cells(verdicts: pd.DataFrame) -> pd.DataFrame:
    """One row per (pipeline, bug, detector) with counts, rates, intervals and p."""
    v = verdicts.assign(flag=verdicts.outcome.eq("flagged"), scored=verdicts.outcome.isin(SCORED),
                        failed=verdicts.outcome.isin(("error", "timeout")))
    g = (v.groupby(["pipeline", "variant", "detector"], sort=True)
         .agg(seeds=("scored", "sum"), detections=("flag", "sum"), errors=("failed", "sum"))
         .reset_index())
    clean = {(r.pipeline, r.detector): (int(r.detections), int(r.seeds))
             for r in g[g.variant == "clean"].itertuples(index=False)}
    rows = []
    for r in g.itertuples(index=False):
        n, k = int(r.seeds), int(r.detections)
        kc, nc = clean.get((r.pipeline, r.detector), (0, 0))
        lo, hi = wilson(k, n)
        p = math.nan if r.variant == "clean" else fisher_greater(k, n, kc, nc)
        rows.append(dict(pipeline=r.pipeline, bug=r.variant, detector=r.detector, seeds=n, detections=k,
                         rate=k / n if n else math.nan, ci_low=lo, ci_high=hi, clean_detections=kc,
                         clean_seeds=nc, clean_rate=kc / nc if nc else math.nan, p_value=p,
                         caught=bool(p < ALPHA) if not math.isnan(p) else False, errors=int(r.errors)))
    return pd.DataFrame(rows)


def less_p(bug: np.ndarray, clean: np.ndarray, paired: bool) -> float:
    """One-sided p-value that ``bug`` is below ``clean``: a paired t-test when the two
    arrays are aligned by seed (same init and data order), else Welch's t-test. Exact
    0/1 when the differences (or both groups) are constant and the t statistic is undefined."""
    keep = ~np.isnan(bug) & ~np.isnan(clean) if paired else None
    if paired:
        bug, clean = bug[keep], clean[keep]
        d = bug - clean
        if len(d) < 2:
            return math.nan
        if d.std() == 0:
            return 0.0 if d.mean() < 0 else 1.0
        test = lambda: stats.ttest_rel(bug, clean, alternative="less")  # noqa: E731
    else:
        bug, clean = bug[~np.isnan(bug)], clean[~np.isnan(clean)]
        if len(bug) < 2 or len(clean) < 2:
            return math.nan
        if bug.std() == 0 and clean.std() == 0:
            return 0.0 if bug.mean() < clean.mean() else 1.0
        test = lambda: stats.ttest_ind(bug, clean, equal_var=False, alternative="less")  # noqa: E731
    with warnings.catch_warnings():  # near-identical seeds: scipy warns, the p-value is still right
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(test().pvalue)


def diff_ci(bug: np.ndarray, clean: np.ndarray, paired: bool, confidence: float = 0.95) -> tuple[float, float]:
    """Confidence interval of mean(bug) - mean(clean) (paired or Welch)."""
    if paired:
        keep = ~np.isnan(bug) & ~np.isnan(clean)
        bug, clean = bug[keep], clean[keep]
    else:
        bug, clean = bug[~np.isnan(bug)], clean[~np.isnan(clean)]
    if len(bug) < 2 or len(clean) < 2 or ((bug - clean).std() if paired else max(bug.std(), clean.std())) == 0:
        d = float(bug.mean() - clean.mean()) if len(bug) and len(clean) else math.nan
        return (d, d)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        test = stats.ttest_rel(bug, clean) if paired else stats.ttest_ind(bug, clean, equal_var=False)
        ci = test.confidence_interval(confidence)
    return (float(ci.low), float(ci.high))


def _mean(x: np.ndarray) -> float:
    x = np.asarray(x, float)
    return float(x[~np.isnan(x)].mean()) if (~np.isnan(x)).any() else math.nan


def _unchanged(bug: pd.DataFrame, clean: pd.DataFrame) -> bool:
    """Seed-aligned buggy and clean runs with bit-identical training loss curves and
    true and reported metrics."""
    if not len(bug) or "curves" not in bug:
        return False
    same = lambda a, b: np.array_equal(np.asarray(a, float), np.asarray(b, float), equal_nan=True)  # noqa: E731
    return (all(same(bug[col], clean[col]) for col in ("metric", "reported_metric") if col in bug)
            and all(same(b.get("loss", []), c.get("loss", [])) for b, c in zip(bug.curves, clean.curves)))


def impact(runs: pd.DataFrame, symptoms: dict, higher_is_worse: dict, metrics: dict) -> pd.DataFrame:
    """Per (pipeline, bug): metric change vs clean with CI and p, symptom test, verdict.
    ``symptoms`` and ``higher_is_worse`` map a bug's name to its symptom probe and the
    direction in which that probe is worse for it.

    verdict: ``not_silent`` (raised or warned), ``harmful`` (metric significantly
    lower, or not a number in most buggy seeds while the clean metric is: a diverged
    run has no metric to compare, and dropping it would call a NaN model harmless),
    ``latent`` (metric holds, the bug's symptom probe significantly worse), ``no_effect``,
    or ``inert``: on every paired seed the training loss curve and the true and reported
    metrics equal the clean ones bit for bit, so the substitution changed neither
    training nor evaluation on this pipeline (e.g. a seam its own loader never reads); a
    symptom probe that still differs reads the seam, not the run. Equal metrics alone
    are not enough (accuracy saturates at 1.0 on a small test set), and an
    evaluation-only bug (test-time augmentation) changes the reported metric: neither is
    inert.
    """
    rows = []
    for pipeline, grp in runs.groupby("pipeline", sort=True):
        clean = grp[grp.variant == "clean"].set_index("seed")
        for variant, bg in grp[grp.variant != "clean"].groupby("variant", sort=True):
            bg = bg.set_index("seed")
            paired = set(bg.index) == set(clean.index)  # same seeds: same init and data order
            cl = clean.loc[bg.index] if paired else clean
            cm, bm = cl.metric.to_numpy(float), bg.metric.to_numpy(float)
            diverged = int((~np.isfinite(bm)).sum()) if np.isfinite(cm).all() else 0
            p = less_p(bm, cm, paired)
            lo, hi = diff_ci(bm, cm, paired)
            name = variant.partition("@")[0]
            probe = symptoms.get(name)
            sc = np.array([r.get(probe, math.nan) for r in cl.probes], float)
            sb = np.array([r.get(probe, math.nan) for r in bg.probes], float)
            sign = 1.0 if higher_is_worse.get(name, True) else -1.0
            sp = less_p(-sign * sb, -sign * sc, paired)  # "bug worse than clean" on the probe
            silent = bool(bg.silent.all())
            verdict = ("not_silent" if not silent else "inert" if paired and _unchanged(bg, cl)
                       else "harmful" if p < ALPHA or diverged > len(bm) / 2
                       else "latent" if sp < ALPHA else "no_effect")
            rows.append(dict(pipeline=pipeline, bug=variant, metric=metrics.get(pipeline, "metric"), clean_mean=_mean(cm),
                             bug_mean=_mean(bm), diverged=diverged, delta=float(_mean(bm) - _mean(cm)),
                             ci_low=lo, ci_high=hi, p_value=p, symptom=probe,
                             symptom_clean=_mean(sc), symptom_bug=_mean(sb),
                             symptom_p=sp, test="paired t" if paired else "Welch t", silent=silent, verdict=verdict))
    return pd.DataFrame(rows)
