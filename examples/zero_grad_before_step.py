"""Tutorial bug: ``optimizer.zero_grad()`` moved between ``backward()`` and ``step()``.

The gradients are wiped just before the update, so the optimizer steps on zeros:
no exception, no warning, the loss just never moves. Written against the public
API only (Bug, register_bug, Pipeline.replace and the ``train_step`` seam).

    recipebench check-bug examples/zero_grad_before_step.py:ZeroGradBeforeStep --seeds 4

(4 seeds is the fewest at which a detector can be marked caught: 3/3 against 0/3 clean
gives one-sided Fisher p = 0.05, not below 0.05.)
"""
from recipebench.bugs.base import Bug


class ZeroGradBeforeStep(Bug):
    name = "zero_grad_before_step"
    description = "optimizer.zero_grad() called after backward() and before step(): every update is zero"
    recipe_step = "verify decreasing training loss"
    source = "https://discuss.pytorch.org/t/why-do-we-need-to-set-the-gradients-manually-to-zero-in-pytorch/4903"
    family = "optim"
    requires = frozenset()
    symptom = "final_metric"
    expected_symptom = "parameters never change; accuracy stays at chance"

    def apply(self, p):
        def train_step(pipeline, model, opt, x, y, ctx):
            loss = pipeline.loss(model(x), y)
            loss.backward()
            opt.zero_grad()  # BUG: belongs before backward()
            opt.step()
            return loss

        return p.replace(train_step=train_step)
