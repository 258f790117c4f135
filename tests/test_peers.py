"""Peer adapters on one clean and one buggy pipeline (skipped when the tool is not
installed; `make test` installs torcheck without its dependencies)."""
import pytest

from detectors.base import DETECTORS, Outcome
from tests.conftest import subject


def test_torcheck_flags_detached_features_and_passes_clean_digits():
    pytest.importorskip("torcheck", reason="torcheck is not installed (pip install --no-deps torcheck)")
    det = DETECTORS.get("torcheck")()
    buggy = det.check(subject("digits", "detached_features"))
    assert buggy.outcome is Outcome.FLAGGED and "torcheck_error" in buggy.evidence
    assert buggy.steps == 1  # the frozen features fail the "changing" check at the first step
    clean = det.check(subject("digits"))
    assert clean.outcome is Outcome.PASSED, clean.evidence


def test_peers_stay_out_of_the_default_run():
    from harness.cli import _names

    assert "torcheck" not in _names(None, DETECTORS)
    assert DETECTORS.get("torcheck").peer
