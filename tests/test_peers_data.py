"""The data-centric peer: cleanlab's Datalab on what the pipeline feeds the net (skipped
when cleanlab or its Datalab dependency ``datasets`` is not installed:
``pip install 'recipebench[peers]'``)."""
import numpy as np
import pytest

from recipebench.detectors.base import DETECTORS, Outcome
from tests.conftest import subject


@pytest.fixture
def cleanlab_cache(tmp_path_factory, monkeypatch):
    pytest.importorskip("cleanlab", reason="cleanlab is not installed (pip install 'recipebench[peers]')")
    pytest.importorskip("datasets", reason="Datalab needs Hugging Face datasets (pip install 'cleanlab[datalab]')")
    home = tmp_path_factory.getbasetemp() / "cleanlab-cache"  # one reference per session
    monkeypatch.setenv("RECIPEBENCH_CACHE_DIR", str(home))
    return home


def test_cleanlab_flags_misaligned_labels_and_passes_clean_digits(cleanlab_cache):
    """30% of the training inputs shuffled without their labels: Datalab's label health
    (out-of-fold logistic regression) falls far below the clean reference; the clean
    digits run stays within the margin on every issue type."""
    det = DETECTORS.get("cleanlab")()
    buggy = det.check(subject("digits", "labels_misaligned"))
    assert buggy.outcome is Outcome.FLAGGED, buggy.evidence
    assert "label" in buggy.evidence["flagged_by"]
    assert buggy.evidence["label"]["score"] < buggy.evidence["label"]["threshold"]
    assert buggy.steps == 0  # a data audit: no training step
    clean = det.check(subject("digits"))
    assert clean.outcome is Outcome.PASSED, clean.evidence
    assert clean.evidence["flagged_by"] == [] and clean.score <= 1
    for issue in ("label", "near_duplicate", "class_imbalance", "outlier", "non_iid"):
        assert issue in clean.evidence  # per-issue-type evidence is recorded
    assert clean.evidence["near_duplicate"]["cross_pairs"] == 0  # no test digit reappears in training
    assert list(cleanlab_cache.glob("cleanlab/digits-*.json"))  # the reference is cached per pipeline


def test_cleanlab_audits_the_fed_epoch_in_training_order():
    """The rows are one epoch of s.batches() (augmented, in the order drawn), flattened;
    token windows are one-hot per position; a per-position target has no Datalab task."""
    from recipebench.detectors.peers.cleanlab_adapter import as_features, fed_epoch, task_of

    s = subject("digits")
    x, y = fed_epoch(s)
    first = next(iter(s.batches()))
    assert len(y) <= len(s.prepared.y_train) < len(y) + len(first[1])
    assert np.array_equal(x[: len(first[1])], first[0].numpy()) and np.array_equal(y[: len(first[1])], first[1].numpy())
    assert as_features(x).shape == (len(y), x[0].size)
    onehot = as_features(np.array([[0, 2], [1, 2]]), vocab=3)
    assert onehot.tolist() == [[1, 0, 0, 0, 0, 1], [0, 1, 0, 0, 0, 1]]
    assert task_of(y) == "classification" and task_of(y.astype(np.float32)) == "regression"
    assert task_of(np.zeros((4, 25), dtype=np.int64)) is None


def test_cleanlab_rule_uses_reference_minimum_margin_and_p_value():
    from recipebench.detectors.peers.cleanlab_adapter import MIN_MARGIN, NONIID_P, judge

    ref = {seed: {"label": {"score": 0.99 + 0.001 * seed}, "non_iid": {"p_value": 0.5}} for seed in range(5)}
    ok = {"label": {"score": 0.99 - MIN_MARGIN / 2}, "non_iid": {"p_value": 1e-3}}
    score, flagged_by, limits = judge(ok, ref)
    assert flagged_by == [] and score <= 1 and limits["label"]["threshold"] == pytest.approx(0.99 - MIN_MARGIN)
    assert judge({**ok, "label": {"score": 0.99 - 2 * MIN_MARGIN}}, ref)[1] == ["label"]
    assert judge({**ok, "non_iid": {"p_value": NONIID_P / 10}}, ref)[1] == ["non_iid"]


def test_cleanlab_missing_is_an_error_verdict_with_the_install_command(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_cleanlab(name, *args, **kwargs):
        if name == "cleanlab" or name.startswith("cleanlab."):
            raise ImportError("No module named 'cleanlab'", name="cleanlab")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_cleanlab)
    verdict = DETECTORS.get("cleanlab")().check(subject("digits"))
    assert verdict.outcome is Outcome.ERROR and "pip install" in verdict.evidence["message"]


def test_cleanlab_is_a_peer_out_of_the_default_run():
    from recipebench.harness.cli import _names

    cls = DETECTORS.get("cleanlab")
    assert cls.peer and cls.stage == "peers" and "cleanlab" not in _names(None, DETECTORS)
