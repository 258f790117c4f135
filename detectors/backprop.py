"""Recipe §2 "use backprop to chart dependencies": gradients show what depends on what."""
import numpy as np

from recipebench.detectors.base import Detector, register_detector
from recipebench.harness.probes import batch_dependency_map, off_diagonal_fraction

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
        chart = batch_dependency_map(s, BATCH)  # (B, B)
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
    the same random state: the gradient must not carry over (norm ratio 1.0 on clean
    pipelines; accumulating gradients give 2.0). Flagged above 1.2."""

    name = "gradient_accumulation"
    description = "the train step does not carry gradients over from the previous step"
    recipe_step = "verify decreasing training loss"
    stage, kind, cost = "backprop", "active", 2
    example_bug = "missing_zero_grad"
    MAX_RATIO = 1.2

    def check(self, s):
        from recipebench.harness.probes import grad_carryover_ratio

        ratio = grad_carryover_ratio(s)
        return self.decide(ratio > self.MAX_RATIO, ratio, steps=2, second_to_first_gradient_norm=ratio)
