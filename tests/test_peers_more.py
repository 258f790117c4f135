"""torchtest, Lightning's overfit_batches and Cockpit, each on one clean and one buggy
pipeline at seed 0 (skipped when the tool is not installed; `make install-test`
installs them without torchvision or CUDA wheels)."""
import pytest

from recipebench.detectors.base import DETECTORS, Outcome
from tests.conftest import subject


def test_torchtest_flags_detached_features_and_passes_clean_digits(tmp_path, monkeypatch):
    """A .detach() between features and head: torchtest's assert_vars_change finds the
    first conv weight unchanged after one step. The clean model's parameters all change
    and its outputs stay inside the range the clean reference sets."""
    pytest.importorskip("torchtest", reason="torchtest is not installed (pip install --no-deps torchtest==0.5)")
    monkeypatch.setenv("RECIPEBENCH_CACHE_DIR", str(tmp_path))
    det = DETECTORS.get("torchtest")()
    buggy = det.check(subject("digits", "detached_features"))
    assert buggy.outcome is Outcome.FLAGGED, buggy.evidence
    assert buggy.evidence["torchtest_error"].startswith("VariablesChangeException: features.0.weight did not change")
    clean = det.check(subject("digits"))
    assert clean.outcome is Outcome.PASSED, clean.evidence
    lo, hi = clean.evidence["output_range"]
    assert lo < clean.evidence["output_min"] and clean.evidence["output_max"] < hi


def test_lightning_overfit_flags_clipped_loss_and_passes_clean_digits():
    """Trainer(overfit_batches=1): the clean model drives its one-batch loss to ~0.1% of
    its start; with every per-example loss clamped at 2.0 (below the 2.3 of a uniform
    guess) no example gets a gradient and the loss stays where it began."""
    pytest.importorskip("pytorch_lightning", reason="pytorch-lightning is not installed (pip install "
                                                    "pytorch-lightning==2.6.6)")
    det = DETECTORS.get("lightning_overfit")()
    buggy = det.check(subject("digits", "clipped_loss_not_gradients@high"))
    assert buggy.outcome is Outcome.FLAGGED and buggy.evidence["final_over_first"] > 0.9, buggy.evidence
    clean = det.check(subject("digits"))
    assert clean.outcome is Outcome.PASSED and clean.evidence["final_over_first"] < 0.01, clean.evidence
    assert clean.steps == buggy.steps == 100


def test_cockpit_flags_extreme_weight_decay_and_passes_clean_digits(tmp_path, monkeypatch):
    """Cockpit's gauges on digits against a clean reference (three reference seeds here,
    five as configured, for time): AdamW weight decay 5.0 on every parameter moves the
    inner-product test statistic out of the clean range; the clean run stays in it."""
    pytest.importorskip("backpack", reason="backpack-for-pytorch is not installed (see the Makefile's install-test)")
    from recipebench.detectors import peers
    from recipebench.detectors.peers import cockpit_adapter

    try:
        cockpit_adapter.import_cockpit()
    except ImportError:
        pytest.skip("cockpit-for-pytorch is not installed (see the Makefile's install-test)")
    monkeypatch.setenv("RECIPEBENCH_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(peers, "REF_SEEDS", (1000, 1001, 1002))
    det = DETECTORS.get("cockpit")()
    buggy = det.check(subject("digits", "extreme_weight_decay"))
    assert buggy.outcome is Outcome.FLAGGED, buggy.evidence
    assert "log10_inner_test" in buggy.evidence["flagged_gauges"], buggy.evidence
    clean = det.check(subject("digits"))
    assert clean.outcome is Outcome.PASSED and clean.score <= 1, clean.evidence
    assert list(tmp_path.glob("cockpit/digits-*.json"))  # the reference, once per pipeline


def test_cockpit_is_not_applicable_to_layers_backpack_does_not_cover():
    """tabular_onecycle's BatchNorm layers train in train mode: not a Cockpit model here."""
    pytest.importorskip("backpack", reason="backpack-for-pytorch is not installed (see the Makefile's install-test)")
    verdict = DETECTORS.get("cockpit")().check(subject("tabular_onecycle"))
    assert verdict.outcome is Outcome.NOT_APPLICABLE and "BatchNorm1d" in verdict.evidence["reason"], verdict.evidence
