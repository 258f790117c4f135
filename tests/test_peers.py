"""Peer adapters on one clean and one buggy pipeline (skipped when the tool is not
installed; `make test` installs traincheck with the test extra and torcheck without
its dependencies)."""
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

    for peer in ("torcheck", "traincheck"):
        assert peer not in _names(None, DETECTORS)
        assert DETECTORS.get(peer).peer


@pytest.fixture(scope="session")
def traincheck_home(tmp_path_factory):
    pytest.importorskip("traincheck", reason="traincheck is not installed (pip install 'recipebench[peers]')")
    pytest.importorskip("cloudpickle", reason="cloudpickle is not installed (pip install 'recipebench[peers]')")
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def traincheck_cache(traincheck_home, monkeypatch):
    monkeypatch.setenv("RECIPEBENCH_CACHE_DIR", str(traincheck_home))
    return traincheck_home


def test_traincheck_flags_frozen_parameters_and_passes_clean_digits(traincheck_cache):
    """Invariants inferred from clean seeds 1000/1001, threshold from 1002/1003; then
    the clean seed 0 passes and frozen parameters violate more invariants than clean."""
    det = DETECTORS.get("traincheck")()
    buggy = det.check(subject("digits", "frozen_parameters"))
    assert buggy.outcome is Outcome.FLAGGED, buggy.evidence
    assert buggy.evidence["violated_invariants"] > buggy.evidence["clean_threshold"]
    assert buggy.steps is not None and buggy.steps <= subject("digits").pipeline.steps
    clean = det.check(subject("digits"))
    assert clean.outcome is Outcome.PASSED, clean.evidence
    assert clean.evidence["invariants"] > 0
    cached = list(traincheck_cache.glob("traincheck/digits-*/calibration.json"))
    assert len(cached) == 1  # inferred once, reused by the second cell


def test_traincheck_failure_is_an_error_verdict_not_a_pass(traincheck_cache, monkeypatch, tmp_path):
    """When a TrainCheck tool fails, the cell is an error with the tool's message."""
    from detectors.peers import traincheck_adapter as tc

    (tmp_path / "inv.json").write_text("")
    monkeypatch.setattr(tc, "reference", lambda clean: (tmp_path / "inv.json", {"threshold": 0, "invariants": 0}))
    monkeypatch.setattr(tc, "SAMPLING", ("--no-such-option",))
    verdict = DETECTORS.get("traincheck")().check(subject("regression"))
    assert verdict.outcome is Outcome.ERROR
    assert "collect_trace exited 2" in verdict.evidence["message"] and "--no-such-option" in verdict.evidence["message"]


def test_traincheck_script_is_the_pipelines_training_loop(tmp_path):
    """The emitted script is what TrainCheck's source rewriter needs: torch imported at
    the top, a module-level ``model``, a loop over ``train_batches`` that steps."""
    import ast

    from detectors.peers.traincheck_adapter import training_script

    src = training_script(tmp_path / "p.pkl", 7)
    tree = ast.parse(src)
    assert isinstance(tree.body[0], ast.Import) and tree.body[0].names[0].name == "torch"
    assert any(isinstance(n, ast.Assign) and any(getattr(t, "id", "") == "model" for t in n.targets) for n in tree.body)
    loops = [n for n in tree.body if isinstance(n, ast.For)]
    assert len(loops) == 1 and loops[0].iter.id == "train_batches"
    assert "batches(p, prep, 7)" in src and "seed_everything(7)" in src
