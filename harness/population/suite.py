"""``recipebench run --suite population``: admitted draws of one side, each trained once
clean and once with one applicable catalog bug, every default recipe detector on both.

**The bug of a draw** is drawn with ``numpy.random.default_rng([bug_seed, draw seed])``
from the catalog bugs that apply to it (sorted by name): on the calibration side only
bugs with ``split == "calibration"``, on the test side any bug that is not a negative
control. A draw that no bug applies to is run clean only.

**Harmful-or-latent, from one seed** (a paired test over seeds is impossible here): the
bug run is ``not_silent`` when it raised or warned; ``inert`` when its loss curve and
its true and reported metrics equal the clean run's bit for bit; ``harmful`` when its
true metric falls below the clean run's by more than the draw's own noise
(``admission.py``: ``max(2 |m0 - m1|, 0.02)`` over the draw's two admission seeds) or is
not finite; ``latent`` when its symptom probe moved: worse than clean, in the probe's
direction, by more than 10% of the larger of the two magnitudes (a probe that is the
metric itself, ``final_metric``, counts only through the noise rule); else
``no_effect``. The headline is :func:`recipebench.harness.validity.single_run_suite`.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from recipebench.bugs.base import BUGS
from recipebench.harness.population.report import write_population_reports  # noqa: F401  (re-exported)

PROBE_MOVE = 0.10  # a symptom probe "moved": worse by more than this share of the larger magnitude


def candidate_bugs(pipeline, side: str) -> list[str]:
    return [n for n, c in BUGS.items() if not c.control and (side == "test" or c.split == "calibration")
            and c().applies_to(pipeline)]


def pick_bug(pipeline, seed: int, side: str, bug_seed: int = 0) -> str | None:
    bugs = candidate_bugs(pipeline, side)
    return bugs[int(np.random.default_rng([bug_seed, seed]).integers(len(bugs)))] if bugs else None


def _moved(probe: str | None, clean: dict, bug: dict) -> bool:
    from recipebench.harness.probes import PROBES

    if probe is None or probe == "final_metric" or probe not in PROBES:
        return False
    c, b = clean.get(probe, math.nan), bug.get(probe, math.nan)
    if c is None or b is None or not (math.isfinite(c) and math.isfinite(b)):
        return False
    worse = (b - c) if PROBES[probe].higher_is_worse else (c - b)
    return worse > PROBE_MOVE * max(abs(c), abs(b)) and worse > 1e-9


def _same(a: pd.Series, b: pd.Series) -> bool:
    eq = lambda x, y: np.array_equal(np.asarray(x, float), np.asarray(y, float), equal_nan=True)  # noqa: E731
    return eq(a.metric, b.metric) and eq(a.reported_metric, b.reported_metric) and \
        eq(a.curves.get("loss", []), b.curves.get("loss", []))


def impact(runs: pd.DataFrame, noise: dict[str, float]) -> pd.DataFrame:
    """Per (draw, bug) at the one seed: the module docstring's rule."""
    rows = []
    for pipeline, grp in runs.groupby("pipeline", sort=True):
        clean = grp[grp.variant == "clean"]
        if not len(clean):
            continue
        c = clean.iloc[0]
        for _, b in grp[grp.variant != "clean"].iterrows():
            probe = BUGS.get(b.variant.partition("@")[0]).symptom if b.variant.partition("@")[0] in BUGS else None
            drop = float(c.metric - b.metric)
            if not bool(b.silent) or isinstance(b.error, str):  # a missing error reads back as NaN
                verdict = "not_silent"
            elif _same(b, c):
                verdict = "inert"
            elif not math.isfinite(b.metric) and math.isfinite(c.metric) or drop > noise.get(pipeline, math.inf):
                verdict = "harmful"
            elif _moved(probe, c.probes, b.probes):
                verdict = "latent"
            else:
                verdict = "no_effect"
            rows.append(dict(pipeline=pipeline, bug=b.variant, verdict=verdict, clean_metric=c.metric,
                             bug_metric=b.metric, drop=drop, noise=noise.get(pipeline, math.nan), symptom=probe,
                             symptom_clean=c.probes.get(probe), symptom_bug=b.probes.get(probe)))
    return pd.DataFrame(rows, columns=["pipeline", "bug", "verdict", "clean_metric", "bug_metric", "drop", "noise",
                                       "symptom", "symptom_clean", "symptom_bug"])


def run_population(side: str, draws: int, out: Path, cache_dir: str, detectors: tuple, workers: int = 2,
                   timeout: float = 120.0, bug_seed: int = 0, progress: bool = True, command: str = "") -> dict:
    """Admit ``draws`` draws of ``side``, run each clean and with its bug into
    ``out/results.sqlite``, write the reports; returns the tables."""
    import time

    from tqdm import tqdm

    from recipebench.harness.cache import ResultCache
    from recipebench.harness.pipeline import get_pipeline
    from recipebench.harness.population.admission import admitted
    from recipebench.harness.report import provenance
    from recipebench.harness.runner import Config, Executor, plan
    from recipebench.harness.store import Store

    start = time.perf_counter()
    found, seen = admitted(side, draws, cache_dir, workers)
    admit_s = time.perf_counter() - start
    chosen = [dict(row, bug=pick_bug(get_pipeline(row["name"]), row["seed"], side, bug_seed)) for row in found]
    names = tuple(r["name"] for r in chosen)
    config = Config(pipelines=names, variants=tuple(sorted({r["bug"] for r in chosen if r["bug"]})),
                    detectors=detectors, seeds=(0,), workers=workers, timeout=timeout)
    store = Store(out / "results.sqlite")
    try:
        store.set_meta(config=config.__dict__, provenance=provenance(), command=command, population=dict(
            side=side, draws=draws, bug_seed=bug_seed, candidates=len(seen), admitted=len(found),
            admission_seconds=round(admit_s, 1), draws_detail=chosen,
            rejected=[dict(name=r["name"], task=r["task"], reason=r["reason"]) for r in seen if not r["admitted"]]))
        cache, jobs = ResultCache(cache_dir), []
        for row in chosen:
            one = Config(pipelines=(row["name"],), variants=(row["bug"],) if row["bug"] else (), detectors=detectors,
                         seeds=(0,), workers=workers, timeout=timeout)
            jobs += plan(one, store, cache, 1) + plan(one, store, cache, 2, {})

        def write(result) -> None:
            store.write(result.run, result.verdicts)
            if result.run is not None and result.run["error"] is None:
                cache.put("runs", result.run["key"], result.run)
            for v in result.verdicts:
                if v["outcome"] not in ("error", "timeout"):
                    cache.put("verdicts", v["key"], v)

        executor = Executor(config, cache_dir)
        try:
            with tqdm(total=len(jobs), desc="population", unit="job", disable=not progress) as bar:
                executor.run(jobs, write, bar)
        finally:
            executor.close()
        store.set_meta(population_seconds=round(time.perf_counter() - start, 1))
        return write_population_reports(store, out)
    finally:
        store.close()
