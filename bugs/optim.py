"""Optimization bugs: the update rule or schedule is wrong (recipe §3 "do not trust
learning rate decay defaults")."""
from bugs.base import Bug, register_bug


@register_bug
class EpochBasedLRDecay(Bug):
    """Step decay (x0.1 every ``level`` epochs) copied from a large-dataset recipe.

    There an epoch is thousands of steps; on this data it is ~16, so the LR is
    driven toward zero long before the model converges.
    """

    name = "epoch_based_lr_decay"
    description = "LR divided by 10 every k epochs (schedule keyed to epochs from another domain)"
    recipe_step = "do not trust learning rate decay defaults"
    source = ("https://karpathy.github.io/2019/04/25/recipe/ (§3: 'ImageNet would decay by 10 on epoch 30'); "
              "pytorch.org/docs/stable/generated/torch.optim.lr_scheduler.StepLR.html")
    family = "optim"
    requires = frozenset({"lr_schedule"})
    symptom = "lr_decades_at_half"
    expected_symptom = "LR falls by orders of magnitude while the training loss is still falling; accuracy drops"
    severities = {"low": 4, "mid": 2, "high": 1}  # epochs between decays
    default_severity = "mid"

    def apply(self, p):
        every, base = self.level, p.schedule

        def step_decay(step, steps_per_epoch):
            return base(step, steps_per_epoch) * 0.1 ** ((step // steps_per_epoch) // every)

        return p.replace(schedule=step_decay)
