"""Admission: a draw belongs to the population only if it trains.

**Rule.** The draw is trained with the harness's own :func:`~recipebench.harness.trace.record`
at training seeds 0 and 1. It is admitted when both runs finish without an error or a
warning and, at each seed, its true metric is

- significantly above the task's trivial baseline (``data.baseline``: majority class,
  each label's majority, the training mean, the most frequent token; computed from the
  splits): one-sided p < ``ALPHA`` = 1e-3, by the exact binomial test of the test
  split's correct predictions against the baseline's rate (accuracies: one trial per
  test example), or by the t test of R^2 read as a squared correlation over the test
  rows (regression, reconstruction; R^2 <= 0 fails);
- and at least ``MIN_GAP`` = 20% of the way from the baseline to a perfect score (1.0):
  a setup that is "significantly" but barely better than the baseline has nothing for
  a bug to break.

**Noise.** A draw's own noise is ``max(2 |m0 - m1|, NOISE_FLOOR)`` with m0, m1 its true
metrics at seeds 0 and 1 and ``NOISE_FLOOR`` = 0.02 (every metric here lies on a scale
whose perfect score is 1). The population suite counts a bug run as harmful when its
true metric falls below the clean run's by more than this.

Verdicts are cached (``<cache-dir>/population/``, keyed by the harness core, the
population's source and the seed), so a seed is trained for admission once.
"""
from __future__ import annotations

import math
import time
from multiprocessing import get_context

ALPHA = 1e-3
MIN_GAP = 0.2
NOISE_FLOOR = 0.02
ADMISSION_SEEDS = (0, 1)


def p_value(task: str, metric: float, base: float, n: int) -> float:
    """One-sided p-value of ``metric`` (on ``n`` test rows) being no better than ``base``."""
    from scipy import stats

    if not math.isfinite(metric) or n < 3:
        return 1.0
    if task in ("regression", "reconstruction"):
        if metric <= 0:
            return 1.0
        if metric >= 1:
            return 0.0
        t = math.sqrt(metric * (n - 2) / (1 - metric))
        return float(stats.t.sf(t, n - 2))
    k = int(round(metric * n))
    return float(stats.binomtest(k, n, min(max(base, 1e-9), 1 - 1e-9), alternative="greater").pvalue)


def assess(seed: int) -> dict:
    """Train draw ``seed`` at the admission seeds; the verdict as plain data."""
    from recipebench.harness.population import draw, recipe
    from recipebench.harness.population.data import baseline
    from recipebench.harness.trace import prepared_splits, record

    p, start = draw(seed), time.process_time()
    row = dict(seed=seed, name=p.name, side=p.partition, task=p.task, metrics=[], p_values=[], reason="")
    try:
        base = baseline(recipe(seed).task, prepared_splits(p))
        n = len(prepared_splits(p).test.y)
    except Exception as exc:  # a draw whose data cannot be prepared is not admitted
        return dict(row, admitted=False, reason=f"data: {type(exc).__name__}: {exc}", baseline=math.nan, noise=math.nan,
                    cpu_seconds=time.process_time() - start)
    for s in ADMISSION_SEEDS:
        tr = record(p, s)
        row["metrics"].append(tr.metric)
        row["p_values"].append(p_value(p.task, tr.metric, base, n))
        if tr.error or tr.warnings:
            row["reason"] = row["reason"] or f"seed {s}: {tr.error or tr.warnings[0]}"
        elif row["p_values"][-1] >= ALPHA:
            row["reason"] = row["reason"] or f"seed {s}: not significantly above the baseline {base:.3f}"
        elif tr.metric - base < MIN_GAP * (1 - base):
            row["reason"] = row["reason"] or f"seed {s}: {tr.metric:.3f} closes < {MIN_GAP:.0%} of the gap to 1"
    m = row["metrics"]
    noise = max(2 * abs(m[0] - m[1]), NOISE_FLOOR) if all(map(math.isfinite, m)) else math.nan
    return dict(row, admitted=not row["reason"], baseline=base, noise=noise, cpu_seconds=time.process_time() - start)


def _key(seed: int) -> str:
    from recipebench.harness import population
    from recipebench.harness.cache import code_key, core_key, digest

    return digest("population-admission", 1, core_key(), code_key(population.side_of), ALPHA, MIN_GAP, seed)


def _init_worker() -> None:
    import warnings

    import torch

    torch.set_num_threads(1)
    warnings.simplefilter("ignore")


def admitted(side: str, n: int, cache_dir: str | None = None, workers: int = 2, log=None) -> tuple[list, list]:
    """The first ``n`` admitted draws of ``side`` (seeds in increasing order) and every
    verdict read on the way (rejected seeds included), as dicts."""
    from recipebench.harness.cache import ResultCache
    from recipebench.harness.population import seeds

    cache = ResultCache(cache_dir) if cache_dir else None
    found, verdicts, candidates = [], [], seeds(side)
    pool = None
    try:
        while len(found) < n:
            batch = [next(candidates) for _ in range(max(workers, int(1.25 * (n - len(found))) + 1))]
            rows = {s: cache.get("population", _key(s)) if cache else None for s in batch}
            todo = [s for s in batch if rows[s] is None]
            if todo:
                if pool is None and workers > 1:
                    pool = get_context("spawn").Pool(workers, initializer=_init_worker)
                results = pool.imap(assess, todo) if pool else map(assess, todo)
                for s, row in zip(todo, results):
                    rows[s] = row
                    if cache:
                        cache.put("population", _key(s), row)
                    if log:
                        log(row)
            for s in batch:
                verdicts.append(rows[s])
                if rows[s]["admitted"] and len(found) < n:
                    found.append(rows[s])
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    return found, verdicts
