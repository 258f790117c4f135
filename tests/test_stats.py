"""Scoring on hand-made counts: Wilson intervals, Fisher p-values, monotonicity, impact."""
import math

import numpy as np
import pandas as pd
import pytest

from recipebench.harness import stats


def test_wilson_matches_closed_form():
    k, n, z = 3, 5, 1.959963984540054
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    lo, hi = stats.wilson(k, n)
    assert lo == pytest.approx(centre - half) and hi == pytest.approx(centre + half)
    assert stats.wilson(0, 5)[0] == 0.0 and math.isnan(stats.wilson(0, 0)[0])


def test_fisher_one_sided_values():
    assert stats.fisher_greater(5, 5, 0, 5) == pytest.approx(1 / 252)
    assert stats.fisher_greater(4, 5, 0, 5) == pytest.approx(6 / 252)
    assert stats.fisher_greater(3, 5, 0, 5) == pytest.approx(21 / 252)
    assert stats.fisher_greater(0, 5, 0, 5) == pytest.approx(1.0)


def test_more_detections_never_uncatch():
    for kc in range(6):
        ps = [stats.fisher_greater(k, 5, kc, 5) for k in range(6)]
        assert all(a >= b for a, b in zip(ps, ps[1:]))


def _verdicts(counts):
    rows = []
    for (variant, detector), (k, n) in counts.items():
        for seed in range(n):
            rows.append(dict(pipeline="p", variant=variant, seed=seed, detector=detector,
                             outcome="flagged" if seed < k else "passed"))
    return pd.DataFrame(rows)


def test_cells_scores_against_clean_rate():
    df = _verdicts({("clean", "d"): (0, 5), ("bugA", "d"): (5, 5), ("bugB", "d"): (3, 5),
                    ("clean", "e"): (2, 5), ("bugA", "e"): (5, 5)})
    df.loc[len(df)] = dict(pipeline="p", variant="bugB", seed=9, detector="e", outcome="error")
    cells = stats.cells(df).set_index(["bug", "detector"])
    assert cells.loc[("bugA", "d")].caught and cells.loc[("bugA", "d")].p_value == pytest.approx(1 / 252)
    assert not cells.loc[("bugB", "d")].caught
    assert cells.loc[("bugA", "e")].clean_rate == pytest.approx(0.4)
    assert not cells.loc[("bugA", "e")].caught  # 5/5 vs 2/5: p = 0.083
    assert cells.loc[("bugB", "e")].errors == 1 and cells.loc[("bugB", "e")].seeds == 0
    assert math.isnan(cells.loc[("clean", "d")].p_value)


def test_advice_is_a_scored_pass():
    """An ``advice`` outcome counts as a seed that was scored and not detected: on a
    bug run it is no detection, on a clean run no false positive."""
    df = _verdicts({("clean", "d"): (0, 5), ("bugA", "d"): (2, 5)})
    df.loc[df.outcome.eq("passed"), "outcome"] = "advice"
    cells = stats.cells(df).set_index(["bug", "detector"])
    assert cells.loc[("clean", "d")].seeds == 5 and cells.loc[("clean", "d")].detections == 0
    assert cells.loc[("bugA", "d")].seeds == 5 and cells.loc[("bugA", "d")].detections == 2


def test_impact_verdicts():
    rng = np.random.default_rng(0)
    rows = []
    for variant, metric, probe in [("clean", 0.9, 0.0), ("harm", 0.7, 0.0), ("lat", 0.9, 1.0), ("none", 0.9, 0.0)]:
        for seed in range(5):
            rows.append(dict(pipeline="p", variant=variant, seed=seed, metric=metric + rng.normal(0, 0.005),
                             silent=True, probes={"x": probe + rng.normal(0, 0.01)}))
    rows.append(dict(pipeline="p", variant="loud", seed=0, metric=0.9, silent=False, probes={}))
    rows.append(dict(pipeline="p", variant="loud", seed=1, metric=0.9, silent=True, probes={}))
    bugs = ("harm", "lat", "none", "loud")
    out = stats.impact(pd.DataFrame(rows), dict.fromkeys(bugs, "x"), dict.fromkeys(bugs, True),
                       {"p": "accuracy"}).set_index("bug")
    assert out.loc["harm"].verdict == "harmful" and out.loc["harm"].delta == pytest.approx(-0.2, abs=0.02)
    assert out.loc["harm"].ci_low < out.loc["harm"].delta < out.loc["harm"].ci_high < 0
    assert out.loc["lat"].verdict == "latent"
    assert out.loc["none"].verdict == "no_effect"
    assert out.loc["loud"].verdict == "not_silent"


def test_a_metric_lost_to_divergence_is_harmful():
    """NaN in 3 of 5 buggy seeds (and a symptom that moved): harmful, not latent; NaN in
    1 of 5 with the rest unchanged stays no_effect."""
    rows = [dict(pipeline="p", variant="clean", seed=s, metric=0.9 + 0.001 * s, silent=True, probes={"x": 0.0})
            for s in range(5)]
    for variant, lost in (("nan", 3), ("one_nan", 1)):
        rows += [dict(pipeline="p", variant=variant, seed=s, metric=math.nan if s < lost else 0.9 + 0.001 * s,
                      silent=True, probes={"x": 1.0 + 0.01 * s if variant == "nan" else 0.0}) for s in range(5)]
    out = stats.impact(pd.DataFrame(rows), {"nan": "x", "one_nan": "x"}, {"nan": True, "one_nan": True},
                       {"p": "accuracy"}).set_index("bug")
    assert out.loc["nan"].verdict == "harmful" and out.loc["nan"].diverged == 3
    assert out.loc["one_nan"].verdict == "no_effect" and out.loc["one_nan"].diverged == 1


def test_a_bug_that_changes_nothing_is_inert_even_if_its_probe_moves():
    """Bit-identical metrics on every paired seed: the substitution never reached the
    run (the probe read the seam, not the batches), so it is neither latent nor a miss;
    one seed off in the ninth digit is a run that changed."""
    def runs(variant, metrics, probe, reported=None, loss=(2.3, 1.1, 0.4)):
        return [dict(pipeline="p", variant=variant, seed=s, metric=m, reported_metric=m if reported is None else reported,
                     curves={"loss": [v + s for v in loss]}, silent=True, probes={"x": probe})
                for s, m in enumerate(metrics)]

    clean = [0.90, 0.91, 0.92, 0.93, 0.94]
    rows = (runs("clean", clean, 0.0) + runs("noop", clean, 1.0) + runs("nearly", clean[:4] + [0.94 + 1e-9], 1.0)
            + runs("eval_only", clean, 1.0, reported=0.5)  # training untouched, the reported metric is not
            + runs("saturated", clean, 1.0, loss=(2.3, 1.5, 0.9)))  # same accuracy, another training
    bugs = ("noop", "nearly", "eval_only", "saturated")
    out = stats.impact(pd.DataFrame(rows), dict.fromkeys(bugs, "x"), dict.fromkeys(bugs, True),
                       {"p": "accuracy"}).set_index("bug")
    assert out.loc["noop"].verdict == "inert"
    assert {out.loc[v].verdict for v in ("nearly", "eval_only", "saturated")} == {"latent"}


def test_constant_groups_have_exact_p():
    for paired in (True, False):
        assert stats.less_p(np.zeros(5), np.ones(5), paired) == 0.0
        assert stats.less_p(np.ones(5), np.ones(5), paired) == 1.0


def test_pairing_by_seed_sees_a_consistent_shift():
    """Seeds differ a lot, the bug costs each seed 0.02: only the paired test sees it."""
    clean = np.array([0.9, 0.7, 0.8, 0.6, 0.75])
    bug = clean - np.array([0.02, 0.025, 0.015, 0.02, 0.03])
    assert stats.less_p(bug, clean, paired=True) < 0.001
    assert stats.less_p(bug, clean, paired=False) > 0.3
    lo, hi = stats.diff_ci(bug, clean, paired=True)
    assert lo < -0.022 < hi < 0


def test_a_symptom_is_judged_in_the_direction_its_bug_declares():
    """One probe, two bugs: an LR ratio that rises is the symptom of a plateau never
    told of a plateau, one that falls the symptom of a collapsing schedule."""
    rng = np.random.default_rng(0)
    rows = []
    for variant, ratio in (("clean", 0.5), ("never_lowered", 1.0), ("collapsed", 0.001)):
        for seed in range(5):
            rows.append(dict(pipeline="p", variant=variant, seed=seed, metric=0.9 + rng.normal(0, 0.005),
                             silent=True, probes={"lr_ratio": ratio + rng.normal(0, 1e-4)}))
    symptoms = {"never_lowered": "lr_ratio", "collapsed": "lr_ratio"}
    right = stats.impact(pd.DataFrame(rows), symptoms, {"never_lowered": True, "collapsed": False},
                         {"p": "accuracy"}).set_index("bug")
    assert set(right.verdict) == {"latent"}
    wrong = stats.impact(pd.DataFrame(rows), symptoms, {"never_lowered": True, "collapsed": True},
                         {"p": "accuracy"}).set_index("bug")
    assert wrong.loc["collapsed"].verdict == "no_effect" and wrong.loc["collapsed"].symptom_p > 0.9
