"""Detector behaviour that the registry walk cannot express."""
import os

import torch

from recipebench.detectors.base import DETECTORS, Outcome
from recipebench.harness.pipeline import get_pipeline
from recipebench.harness.subject import Subject


def test_reproducibility_flags_an_unseeded_data_order():
    """A data order drawn from an unseeded generator (fresh OS entropy per epoch) is
    the classic irreproducible pipeline; kept out of the catalog on purpose."""
    def unseeded_order(n, gen, y):
        return torch.randperm(n, generator=torch.Generator().manual_seed(int.from_bytes(os.urandom(4), "little")))

    unseeded = get_pipeline("digits").replace(order=unseeded_order)
    verdict = DETECTORS.get("reproducibility")().check(Subject(unseeded, 0))
    assert verdict.outcome is Outcome.FLAGGED, verdict.evidence
    assert verdict.evidence["max_relative_loss_difference"] > 1e-3


def test_reproducibility_passes_every_clean_pipeline_seed_1():
    for name in ("digits", "imbalanced", "charlm"):
        verdict = DETECTORS.get("reproducibility")().check(Subject(get_pipeline(name), 1))
        assert verdict.outcome is Outcome.PASSED, (name, verdict.evidence)


def test_batch_dependency_flags_an_output_that_ignores_its_input():
    """Detached features: no gradient path from input to output. The chart is all
    zeros (it used to raise 'not used in the graph', an error cell), so each output
    is independent of its own example and the check flags it; clean passes."""
    from tests.conftest import subject

    det = DETECTORS.get("batch_dependency")()
    buggy = det.check(subject("digits", "detached_features"))
    assert buggy.outcome is Outcome.FLAGGED and buggy.evidence["outputs_without_own_gradient"] == 1.0
    assert buggy.evidence["leak_fraction"] == 0.0
    clean = det.check(subject("digits"))
    assert clean.outcome is Outcome.PASSED and clean.evidence["outputs_without_own_gradient"] == 0.0
    # softmax outputs sum to 1 whatever the input: a plain sum would read as "no dependence"
    probabilities = det.check(subject("digits", "softmax_before_cross_entropy"))
    assert probabilities.outcome is Outcome.PASSED, probabilities.evidence


def test_overfit_one_batch_flags_a_diverging_loss_at_once():
    """An LR of 1e30 sends the loss to NaN in two steps: flagged (on a language model no
    batch accuracy backs up a loss bound that NaN compares false to), and the detector
    stops there instead of training 600 steps of NaN."""
    diverging = get_pipeline("charlm").replace(lr=1e30)
    verdict = DETECTORS.get("overfit_one_batch")().check(Subject(diverging, 0))
    assert verdict.outcome is Outcome.FLAGGED, verdict.evidence
    assert verdict.steps < 100
