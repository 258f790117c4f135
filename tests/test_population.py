"""The generated population (harness/population): deterministic draws, a fixed split,
admission, names resolvable in a fresh process, every default detector on a few
calibration draws without an error cell."""
from __future__ import annotations

import math
import subprocess
import sys

import pytest

from recipebench.harness import population as P
from recipebench.harness.pipeline import PIPELINES, get_pipeline
from recipebench.harness.population.admission import ALPHA, MIN_GAP, admitted, p_value
from recipebench.harness.population.assemble import assemble
from recipebench.harness.population.grammar import choose
from recipebench.harness.registry import RegistryError
from recipebench.harness.trace import record


def test_recipe_is_deterministic_per_seed():
    for seed in range(40):
        assert choose(seed) == choose(seed)
    assert len({choose(s) for s in range(40)}) == 40


def test_same_seed_same_training():
    for seed in (2, 3, 43):  # an accumulating LSTM, an EmbeddingBag (test side), an EmbeddingBag (calibration)
        r = choose(seed)
        a = assemble(r, P.name_of(seed), P.side_of(seed)).replace(steps=12)
        b = assemble(choose(seed), P.name_of(seed), P.side_of(seed)).replace(steps=12)
        assert a.description == b.description and a.capabilities == b.capabilities
        ta, tb = record(a, 0), record(b, 0)
        assert ta.error is None and ta.loss == tb.loss and ta.metric == tb.metric


def test_split_is_fixed():
    # the rule of the module docstring, pinned: never change these
    assert [P.side_of(s)[0] for s in range(24)] == list("ctctctctctctcctccttctttt")
    assert sum(P.side_of(s) == "calibration" for s in range(1000)) == 518
    assert P.name_of(42) == "pop_t0042" and P.name_of(17) == "pop_t0017" and P.name_of(12345).endswith("12345")
    for seed in range(30):
        assert P.seed_of(P.name_of(seed)) == seed
        assert get_pipeline(P.name_of(seed)).partition == P.side_of(seed)


def test_unknown_names_keep_the_registry_message():
    for bad in ("pop_t0000", "pop_c0001", "pop_c2", "pop_c00002", "pop_x0001", "digitz"):
        assert bad not in PIPELINES
        with pytest.raises(RegistryError, match=f"unknown pipeline '{bad}'"):
            PIPELINES.get(bad)
    assert "pop_c0000" in PIPELINES and "pop_c0000" not in PIPELINES.names()  # resolved, never listed


def test_names_resolve_in_a_fresh_process():
    code = ("from recipebench.harness.pipeline import get_pipeline; p = get_pipeline('pop_t0042'); "
            "print(p.name, p.partition, p.description.split(':')[0])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[:2] == ["pop_t0042", "test"]


def test_p_value():
    assert p_value("classification", 0.9, 0.1, 100) < 1e-10
    assert p_value("classification", 0.12, 0.1, 100) > ALPHA
    assert p_value("regression", 0.3, 0.0, 90) < ALPHA and p_value("regression", -0.1, 0.0, 90) == 1.0
    assert p_value("binary", math.nan, 0.5, 100) == 1.0


def test_admitted_draws_train():
    found, seen = admitted("calibration", 3, cache_dir=None, workers=1)
    assert len(found) == 3 and [r["seed"] for r in found] == sorted(r["seed"] for r in found)
    assert all(P.side_of(r["seed"]) == "calibration" for r in seen)
    for row in found:
        assert all(m - row["baseline"] >= MIN_GAP * (1 - row["baseline"]) for m in row["metrics"])
        assert all(p < ALPHA for p in row["p_values"])
        assert record(P.draw(row["seed"]), 0).metric == row["metrics"][0]  # the population's clean run
    assert all(r["reason"] for r in seen if not r["admitted"])
    first = P.seeds("calibration")
    assert [r["seed"] for r in seen] == [next(first) for _ in seen]  # candidates in order, none skipped
    assert found == [r for r in seen if r["admitted"]][:3]  # a rejected seed is skipped: the next one is read


def test_every_default_detector_on_calibration_draws_without_error():
    from recipebench.detectors.base import DETECTORS
    from recipebench.harness.runner import check_one
    from recipebench.harness.subject import Subject

    detectors = [n for n, c in DETECTORS.items() if not getattr(c, "peer", False)  # the project's own detectors
                 and getattr(c, "in_default_run", True) and not c.needs_reference
                 and c.__module__.startswith("recipebench.detectors.")]
    for name in ("pop_c0004", "pop_c0013", "pop_c0043"):  # a GRU language model, a CNN, an EmbeddingBag
        p = get_pipeline(name)
        trace = record(p, 0)
        assert trace.error is None and trace.silent
        subject = Subject(p, 0, trace)
        for d in detectors:
            verdict = check_one(d, subject, p, trace, 120.0)
            assert verdict.outcome.value not in ("error", "timeout"), (name, d, verdict.evidence)
