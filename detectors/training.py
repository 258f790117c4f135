"""Training-health checks that read the shared trace (recipe §2-3: gradients reach
every parameter, the loss drives the gradient, the LR schedule is sane)."""
import numpy as np

from detectors.base import Detector, register_detector


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
        return self.decide(frac > self.MAX_FRACTION, frac, steps=(first + 1) if first is not None else len(t.loss),
                           misclassified=wrong, with_zero_gradient=sum(t.wrong_zero_grad))


@register_detector
class LRScheduleCollapse(Detector):
    """The LR falls below 1% of its peak in the first 75% of training, and when it
    first dropped (below half its peak) the training loss was still improving: the
    mean loss over the last quarter before the drop at least 5% below the mean over
    the quarter before that (windows of at least 5 steps). A cosine or linear decay to zero reaches 1% only in the
    last few percent of training, and a constant LR never drops, so both pass."""

    name = "lr_schedule"
    description = "the LR does not collapse while the training loss is still falling"
    recipe_step = "do not trust learning rate decay defaults"
    stage, kind, cost = "training", "passive", 1
    requires = frozenset({"lr_schedule"})
    example_bug = "epoch_based_lr_decay"
    FLOOR, EARLY, IMPROVING = 0.01, 0.75, 0.05

    def check(self, s):
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
