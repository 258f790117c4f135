"""Recipe §2 "use backprop to chart dependencies": gradients show what depends on what."""
import numpy as np

from recipebench.detectors.base import Detector, register_detector
from recipebench.harness.subject import Unreadable
from recipebench.harness.probes import batch_dependency_map, carried_gradient_fraction, off_diagonal_fraction

BATCH = 16


@register_detector
class BatchDependency(Detector):
    """Take a fixed random weighting of example i's outputs (the recipe's "sum of all
    outputs of example i", made robust to outputs that always sum to 1), backprop to
    the input batch, and require a non-zero gradient on example i only. Independent
    examples give exactly 0 on the others (eval mode, so batch norm and dropout cannot
    mix them), so any leak above float noise (1e-6 of the gradient mass) is flagged.
    So is an output that gets no gradient at all from its own example (the output does
    not depend on the input, e.g. detached features): every clean pipeline's chart has
    a non-zero diagonal.
    """

    name = "batch_dependency"
    description = "each output's gradient reaches its own input example and no other"
    recipe_step = "use backprop to chart dependencies"
    stage, kind, cost = "backprop", "active", 2
    example_bug = "view_instead_of_permute"
    TOLERANCE = 1e-6

    def check(self, s):
        try:
            chart = batch_dependency_map(s, BATCH)  # (B, B)
        except RuntimeError as exc:  # the recorded input representation (a frozen embedding's output) has no grad
            if "does not require grad" not in str(exc):
                raise
            raise Unreadable(f"no gradient reaches the model's input representation: {exc}") from exc
        leak = off_diagonal_fraction(chart)
        blind = float(np.mean(np.diag(chart) == 0))  # share of outputs independent of their own input
        return self.decide(leak > self.TOLERANCE or blind > 0, max(leak, blind), steps=0, leak_fraction=leak,
                           outputs_without_own_gradient=blind, batch=BATCH, dependency_map=chart.round(3).tolist())


@register_detector
class CausalDependency(Detector):
    """For an autoregressive model, the output at position t may depend only on inputs
    at positions <= t: backprop from each position to the input embeddings and require
    zero gradient on later positions (exactly 0 with a causal mask)."""

    name = "causal_dependency"
    description = "outputs at time t get no gradient from inputs after t"
    recipe_step = "use backprop to chart dependencies"
    stage, kind, cost = "backprop", "active", 2
    requires = frozenset({"autoregressive"})
    example_bug = "missing_causal_mask"
    TOLERANCE = 1e-6

    def check(self, s):
        from recipebench.harness.probes import future_leak

        leak = future_leak(s)
        return self.decide(leak > self.TOLERANCE, leak, steps=0, future_gradient_fraction=leak)


@register_detector
class RegisteredParameters(Detector):
    """Walk the autograd graph of one forward pass: every parameter it uses must be
    registered in ``model.parameters()`` (so the optimizer, ``state_dict`` and
    ``.train()/.eval()`` see it). Clean models: exactly 100%."""

    name = "registered_parameters"
    description = "every parameter the forward pass uses is registered with the model"
    recipe_step = "use backprop to chart dependencies"
    stage, kind, cost = "backprop", "active", 2
    example_bug = "layers_in_python_list"

    def check(self, s):
        from recipebench.harness.probes import registered_param_fraction

        frac = registered_param_fraction(s)
        return self.decide(frac < 1.0, 1 - frac, steps=0, registered_fraction_of_used=frac)


@register_detector
class GradientAccumulation(Detector):
    """Call the pipeline's train step twice on one batch with the learning rate at 0 and
    the same random state, and look at what each parameter's ``.grad`` already holds
    when the second step's first gradient for it arrives (a tensor hook runs before
    autograd adds the new gradient in): a step that starts from zeroed gradients
    carries exactly nothing over, a missing ``zero_grad()`` carries the whole previous
    gradient. The score is the carried norm over the fresh one; flagged above 0.01.
    Calibration (10 pipelines, 5 clean seeds each and every negative control at seed 0):
    clean and controls carry exactly 0 (``zero_grad`` leaves None or zeros, so no
    round-off can appear: 0.01 only states that a leftover of any size is a bug);
    missing_zero_grad carries 0.95-1.0 on all 50 bug runs.

    Only the first gradient a parameter receives in a step counts: summing micro-batches
    within one step (nanoGPT's gradient accumulation, DCGAN's real and fake halves) is
    legitimate. Measured before the step, not after it: the former rule compared the
    total gradient norms after the two steps (1.0 clean, 2.0 accumulated; flagged above
    1.2), and a step that clips brings both back to the clipping norm: on lstm_lm
    (word_language_model's clip at 0.25) missing_zero_grad read 1.0 on all 5 seeds and
    on digits (clip 1.0) 1.10-2.0, unseen at 1.10; an optimizer that ignores the LR it is
    given (the Adadelta control, lr 1.0) moved the weights between the steps and read
    0.72-1.11 clean. Carried in, the clipped gradient is still there (lstm_lm: 0.95-0.96)
    and the optimizer's step does not enter."""

    name = "gradient_accumulation"
    description = "the train step does not carry gradients over from the previous step"
    recipe_step = "verify decreasing training loss"
    stage, kind, cost = "backprop", "active", 2
    example_bug = "missing_zero_grad"
    MAX_CARRIED = 0.01

    def check(self, s):
        carried = carried_gradient_fraction(s)
        return self.decide(carried > self.MAX_CARRIED, carried, steps=2, carried_to_fresh_gradient_norm=carried)

