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


def test_output_init_advises_on_a_default_head_and_flags_an_overconfident_one():
    """The recipe's "init the final bias" is advice: a default head (uniform on every
    example) on a 9:1 prior gets ``advice``, and so does a head scaled x30 at init
    (digits seed 0: 0.97 nats from the prior, within what legitimate gain-scaled inits
    reach); scaled x100, far beyond them, it is flagged; the prior-initialized clean
    head passes."""
    from tests.conftest import subject

    det = DETECTORS.get("output_init")()
    default = det.check(subject("imbalanced", "output_bias_not_initialized"))
    assert default.outcome is Outcome.ADVICE and not default.flagged, default.evidence
    assert default.evidence["kl_prior_to_prediction"] > det.MAX_KL > default.evidence["kl_uniform_to_example_predictions"]
    regression = det.check(subject("regression", "output_bias_not_initialized"))
    assert regression.outcome is Outcome.ADVICE, regression.evidence
    assert det.check(subject("digits", "overconfident_output_init")).outcome is Outcome.ADVICE
    assert det.check(subject("digits", "overconfident_output_init@high")).outcome is Outcome.FLAGGED
    assert det.check(subject("imbalanced")).outcome is Outcome.PASSED


def test_update_ratio_flags_shrinking_matrices_and_makes_a_high_ratio_advice():
    """Legitimate L2 1e-4 halves a bias or shrinks token embeddings but grows the weight
    matrices (not flagged); extreme weight decay shrinks them (flagged).
    word_language_model's SGD at lr 20 moves weights by ~8% a step: advice about the
    LR, not a bug sign."""
    from tests.conftest import subject

    det = DETECTORS.get("update_ratio")()
    for pipeline in ("imbalanced", "charlm"):  # charlm: L2 shrinks rare token embeddings, not the matrices
        legit = det.check(subject(pipeline, "control_weight_decay"))
        assert legit.outcome is Outcome.PASSED and legit.evidence["matrix_norm_ratio"] > 1.0, legit.evidence
    extreme = det.check(subject("imbalanced", "extreme_weight_decay"))
    assert extreme.outcome is Outcome.FLAGGED and extreme.evidence["matrix_norm_ratio"] < det.MIN_MATRIX_NORM
    high = det.check(subject("lstm_lm"))
    assert high.outcome is Outcome.ADVICE and high.evidence["median_update_ratio"] > det.BAND[1], high.evidence


def test_zero_input_baseline_asks_for_any_information_not_a_fixed_share():
    """charlm at half its training length ends at ~0.81 of the zero-input loss (flagged
    by the former 0.8 ratio): significantly lower, so it passes; a scrambled input layout
    leaves nothing to extract and is flagged. A GAN has no input-independent baseline."""
    from tests.conftest import subject

    det = DETECTORS.get("zero_input_baseline")()
    slow = det.check(subject("charlm", "control_half_length"))
    assert slow.outcome is Outcome.PASSED and slow.score > 0.8, slow.evidence
    assert det.check(subject("sequence", "view_instead_of_permute")).outcome is Outcome.FLAGGED
    assert not det.applies_to(get_pipeline("dcgan").capabilities)


def test_larger_model_is_not_applicable_to_a_run_shorter_than_its_snapshot():
    """Half of digits' 150 steps ends before the trace's first subset-loss snapshot
    (step 100): not applicable, not an IndexError."""
    from tests.conftest import subject

    verdict = DETECTORS.get("larger_model_lower_loss")().check(subject("digits", "control_half_length"))
    assert verdict.outcome is Outcome.NOT_APPLICABLE, verdict.evidence


def test_gradient_accumulation_sees_a_carried_gradient_behind_clipping_not_micro_batches():
    """lstm_lm clips at 0.25: after each step the gradient norm is back at the clip, so
    comparing norms after two steps read 1.0 with zero_grad missing. What the second
    step finds already in ``.grad`` is the carried gradient itself. Summing two
    micro-batches within one step (zeroed once) carries nothing and passes."""
    from tests.conftest import subject

    det = DETECTORS.get("gradient_accumulation")()
    carried = det.check(subject("lstm_lm", "missing_zero_grad"))
    assert carried.outcome is Outcome.FLAGGED and carried.score > 0.5, carried.evidence
    assert det.check(subject("lstm_lm")).score == 0.0

    def two_micro_batches(p, model, opt, x, y, ctx):
        opt.zero_grad(set_to_none=True)
        for xs, ys in zip(x.chunk(2), y.chunk(2)):
            loss = p.loss(model(xs), ys) / 2
            loss.backward()
        opt.step()
        return loss

    micro = DETECTORS.get("gradient_accumulation")().check(
        Subject(get_pipeline("digits").replace(train_step=two_micro_batches), 0))
    assert micro.outcome is Outcome.PASSED and micro.score == 0.0, micro.evidence


def test_lr_schedule_flags_a_warmup_that_never_ends_not_one_from_zero():
    """A one-cycle schedule stepped per epoch is still warming up when training ends;
    stepped per step it peaks at 30% and passes. A warmup from LR 0 (the Hugging Face
    default) is the rise to the peak, not a collapse below 1% of it."""
    from recipebench.harness.pipeline import Scheduled
    from tests.conftest import subject

    det = DETECTORS.get("lr_schedule")()
    stuck = det.check(subject("tabular_onecycle", "warmup_stepped_per_epoch"))
    assert stuck.outcome is Outcome.FLAGGED and stuck.evidence["peak_step"] >= 0.5 * stuck.evidence["total_steps"]
    assert det.check(subject("tabular_onecycle")).outcome is Outcome.PASSED

    def warmup_from_zero(opt, steps, spe):
        return Scheduled(torch.optim.lr_scheduler.LambdaLR(opt, lambda i: min(1.0, i / max(1, steps // 10))))

    verdict = det.check(Subject(get_pipeline("digits").replace(scheduler=warmup_from_zero), 0))
    assert verdict.outcome is Outcome.PASSED and verdict.evidence["min_lr_ratio"] == 1.0, verdict.evidence


def test_class_balance_flags_single_class_labels_in_every_split():
    """y / 255 cast to int sent through every split's labels: the splits agree (all 0),
    so comparing them shows nothing; one training class does."""
    from tests.conftest import subject

    det = DETECTORS.get("class_balance")()
    flat = det.check(subject("finetune", "labels_transformed_every_split"))
    assert flat.outcome is Outcome.FLAGGED and flat.evidence["training_classes"] == 1, flat.evidence
    assert flat.evidence["train_vs_prior_tv"] < det.MAX_TV  # the old rule alone passed it
    clean = det.check(subject("finetune"))
    assert clean.outcome is Outcome.PASSED and clean.evidence["training_classes"] == 10, clean.evidence


def _reseeded_every_epoch(seed_of_epoch):
    """digits whose sampler's generator is re-seeded before each epoch with
    ``seed_of_epoch(epoch)``: a shuffled order within every epoch."""
    from torch.utils.data import BatchSampler, DataLoader, RandomSampler, TensorDataset

    def loader(p, x, y, gen):
        sampler = RandomSampler(range(len(y)), generator=torch.Generator())
        return DataLoader(TensorDataset(x, y), batch_size=None,
                          sampler=BatchSampler(sampler, p.batch_size, drop_last=True))

    def epoch_start(loader, epoch):
        loader.sampler.sampler.generator.manual_seed(seed_of_epoch(epoch))

    return get_pipeline("digits").replace(loader=loader, epoch_start=epoch_start)


def test_epoch_order_flags_a_generator_reseeded_with_a_constant():
    """The same shuffle every epoch (a generator seeded with a constant in the epoch
    loop, or set_epoch never called) is flagged, while batch_composition, which looks
    at one epoch, passes it; seeding with the epoch number (what set_epoch does) passes."""
    replayed = Subject(_reseeded_every_epoch(lambda epoch: 0), 0)
    verdict = DETECTORS.get("epoch_order")().check(replayed)
    assert verdict.outcome is Outcome.FLAGGED and verdict.evidence["repeated_positions"] == 1.0, verdict.evidence
    assert DETECTORS.get("batch_composition")().check(replayed).outcome is Outcome.PASSED
    fresh = DETECTORS.get("epoch_order")().check(Subject(_reseeded_every_epoch(lambda epoch: epoch), 0))
    assert fresh.outcome is Outcome.PASSED and fresh.evidence["repeated_positions"] < 0.02, fresh.evidence


def test_epoch_order_is_not_applicable_with_one_batch_per_epoch():
    """finetune feeds its whole training split as one batch: order cannot matter."""
    from tests.conftest import subject

    verdict = DETECTORS.get("epoch_order")().check(subject("finetune"))
    assert verdict.outcome is Outcome.NOT_APPLICABLE and "one batch" in verdict.evidence["reason"]
