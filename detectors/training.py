"""Training-health checks that read the shared trace (recipe §2-3: gradients reach
every parameter, the loss drives the gradient, the LR schedule is sane)."""
import numpy as np

from recipebench.detectors.base import Detector, register_detector


@register_detector
class GradientFlow(Detector):
    """Every parameter receives a non-zero gradient at some step and actually changes."""

    name = "gradient_flow"
    description = "every parameter gets a non-zero gradient and is updated"
    recipe_step = "use backprop to chart dependencies"
    stage, kind, cost = "training", "passive", 1
    example_bug = "clipped_loss_not_gradients@high"

    def check(self, s):
        t = s.trace
        no_grad = [n for n, g in t.grad_norm.items() if max(g, default=0.0) == 0.0]
        frozen = [n for n, u in t.update_norm.items() if max(u, default=0.0) == 0.0]
        bad = sorted(set(no_grad) | set(frozen))
        return self.decide(bool(bad), len(bad) / max(1, len(t.grad_norm)), steps=len(t.loss),
                           params_without_gradient=no_grad, params_never_updated=frozen)


@register_detector
class GradLossConsistency(Detector):
    """A misclassified example has non-zero loss, so its output gradient must be
    non-zero. Cross-entropy never gives an exact zero there; the clean rate is 0.0
    on every pipeline, and the flag is more than 1% of misclassified examples."""

    name = "grad_loss_consistency"
    description = "misclassified examples receive a non-zero output gradient"
    recipe_step = "overfit one batch"
    stage, kind, cost = "training", "passive", 1
    requires = frozenset({"classification"})
    example_bug = "clipped_loss_not_gradients"
    MAX_FRACTION = 0.01

    def check(self, s):
        t = s.trace
        wrong = sum(t.wrong)
        frac = sum(t.wrong_zero_grad) / wrong if wrong else 0.0
        first = next((i for i, z in enumerate(t.wrong_zero_grad) if z), None)
        return self.decide(frac > self.MAX_FRACTION, frac, steps=(t.sample_steps[first] + 1) if first is not None else len(t.loss),
                           misclassified=wrong, with_zero_gradient=sum(t.wrong_zero_grad))


@register_detector
class LRScheduleCollapse(Detector):
    """Two failure shapes of a schedule. (1) The LR falls below 1% of its peak in the
    first 75% of training, and when it first dropped (below half its peak) the
    training loss was still improving: the mean loss over the last quarter before the
    drop at least 5% below the mean over the quarter before that (windows of at least
    5 steps). (2) The LR collapses below 1% and recovers above 50% more than once (a
    per-epoch schedule stepped per iteration). A cosine or linear decay to zero
    reaches 1% only in the last few percent of training, a warm restart recovers at
    most once, and a constant LR never drops: all pass."""

    name = "lr_schedule"
    description = "the LR does not collapse while the training loss is still falling"
    recipe_step = "do not trust learning rate decay defaults"
    stage, kind, cost = "training", "passive", 1
    requires = frozenset({"lr_schedule"})
    example_bug = "epoch_based_lr_decay"
    FLOOR, EARLY, IMPROVING = 0.01, 0.75, 0.05

    def check(self, s):
        from recipebench.harness.probes import lr_oscillations

        cycles = int(lr_oscillations(s))
        if cycles > 1:
            return self.decide(True, float(cycles), steps=len(s.trace.lr), lr_collapses=cycles)
        lr, loss = np.asarray(s.trace.lr), np.asarray(s.trace.loss)
        below = np.flatnonzero(lr < self.FLOOR * lr.max())
        if not len(below) or below[0] >= self.EARLY * len(lr):
            return self.decide(False, 0.0, steps=len(lr), min_lr_ratio=float(lr.min() / lr.max()))
        first_drop = max(int(np.flatnonzero(lr < 0.5 * lr.max())[0]), 4)
        q = min(max(first_drop // 4, 5), first_drop // 2)
        recent, before = loss[first_drop - q:first_drop].mean(), loss[first_drop - 2 * q:first_drop - q].mean()
        improvement = float(1 - recent / before) if before > 0 else 0.0
        return self.decide(improvement > self.IMPROVING, improvement, steps=int(below[0]) + 1,
                           first_drop_step=first_drop, collapse_step=int(below[0]), total_steps=len(lr),
                           loss_improvement_before_drop=improvement)


@register_detector
class UpdateRatio(Detector):
    """Update-to-weight ratio (per parameter tensor, per step: ||update|| / ||weight at
    init||), median over steps and tensors. Clean pipelines sit between 1e-4 and 1e-2
    (the familiar ~1e-3); the flag is a median outside [1e-5, 5e-2] or a tensor whose
    weights shrink by more than half while training (decay overpowering the gradient)."""

    name = "update_ratio"
    description = "update-to-weight ratios sit in a sane band and weights do not collapse"
    recipe_step = "verify decreasing training loss"
    stage, kind, cost = "training", "passive", 1
    example_bug = "extreme_weight_decay"
    BAND, MIN_NORM_RATIO = (1e-5, 5e-2), 0.5

    def check(self, s):
        t = s.trace
        ratios = [u / t.param_norm[n] for n, us in t.update_norm.items() if t.param_norm[n] > 0 for u in us]
        median = float(np.median(ratios)) if ratios else 0.0
        shrink = {n: t.param_norm_final[n] / t.param_norm[n] for n in t.param_norm
                  if t.param_norm[n] > 0 and n in t.param_norm_final and t.grad_norm.get(n) and max(t.grad_norm[n]) > 0}
        collapsed = sorted(n for n, r in shrink.items() if r < self.MIN_NORM_RATIO)
        flag = not (self.BAND[0] <= median <= self.BAND[1]) or bool(collapsed)
        return self.decide(flag, median, steps=len(t.loss), median_update_ratio=median,
                           collapsed_params=collapsed, smallest_norm_ratio=min(shrink.values(), default=1.0))


@register_detector
class DeadActivations(Detector):
    """Share of ReLU units that output zero for every example of the fixed validation
    batch after training. Clean pipelines: at most 1 of the CNN's 24 units (0.042);
    flagged above 0.12 (3 or more of 24)."""

    name = "dead_activations"
    description = "most ReLU units are alive after training"
    recipe_step = "visualize prediction dynamics"
    stage, kind, cost = "training", "passive", 1
    example_bug = "normalized_twice"
    MAX_DEAD = 0.12

    def check(self, s):
        dead = s.trace.dead_units
        return self.decide(dead > self.MAX_DEAD, dead, steps=len(s.trace.loss), dead_unit_fraction=dead)


@register_detector
class ClippingEffective(Detector):
    """Gradient clipping is configured (``clip_norm``): the total gradient norm that
    reaches the optimizer must never exceed it (clean: max exactly <= clip_norm)."""

    name = "clipping_effective"
    description = "no gradient above the configured clip norm reaches the optimizer"
    recipe_step = "use backprop to chart dependencies"
    stage, kind, cost = "training", "passive", 1
    requires = frozenset({"grad_clipping"})
    example_bug = "clip_has_no_effect"
    SLACK = 1.01

    def check(self, s):
        from recipebench.harness.probes import total_grad_norm

        norms = total_grad_norm(s.trace)
        limit = s.pipeline.clip_norm
        over = np.flatnonzero(norms > self.SLACK * limit)
        return self.decide(len(over) > 0, float(norms.max() / limit), steps=int(over[0]) + 1 if len(over) else len(norms),
                           max_grad_norm=float(norms.max()), clip_norm=limit, steps_over_limit=len(over))


@register_detector
class TrainEvalMode(Detector):
    """The model is in train mode for every training step (read from the trace) and
    evaluation is deterministic: two evaluations of one fresh model under different
    random states give the same metric (dropout off, batch norm on running statistics,
    no random test-time transforms)."""

    name = "train_eval_mode"
    description = "train mode while training, deterministic eval mode while evaluating"
    recipe_step = "add significant digits to your eval"
    stage, kind, cost = "training", "active", 2
    example_bug = "train_mode_during_eval"

    def check(self, s):
        from recipebench.harness.probes import eval_mode_training_fraction, eval_nondeterminism

        eval_frac, jitter = eval_mode_training_fraction(s), eval_nondeterminism(s)
        return self.decide(eval_frac > 0 or jitter > 0, eval_frac + jitter, steps=len(s.trace.loss),
                           eval_mode_training_fraction=eval_frac, metric_difference_between_evaluations=jitter)
