"""A re-creation of fastai's learning-rate finder (``Learner.lr_find``, fastai 2.x), not
the library itself: fastai pulls torchvision and spaCy, several GB beside the CPU torch
wheel, so the range test is rebuilt here from fastai's source, default for default.

fastai's test: from the model as it is, train for ``num_it=100`` iterations while the
learning rate grows exponentially from ``start_lr=1e-7`` to ``end_lr=10``
(``SchedExp``), record the loss smoothed as fastai's ``AvgSmoothLoss`` does (an
exponential moving average with ``beta=0.98``, debiased), stop early once the smoothed
loss exceeds 4x the best so far (``stop_div``), and suggest a learning rate with
``valley`` (fastai's default suggestion since 2.5) on the curve without its first
``num_it // 10`` and last 5 points.

fastai draws the curve and stops there; its users read two things off it, and those are
the rule here. A run is flagged when

* the loss hardly falls: the lowest 5-step moving average of the raw losses is less
  than ``MIN_DROP`` below the mean of the first 10 (the model learns at no learning
  rate of the sweep). Raw, not fastai's smoothed curve: with ``beta=0.98`` the average
  lags about 50 steps behind a 100-step sweep that diverges near step 85, so clean
  smoothed drops (7-61%) overlap buggy ones; or
* the pipeline's learning rate lies far from the suggestion: more than ``MAX_ABOVE``
  times above it, or more than ``MAX_BELOW`` times below it.

The pipeline's optimizer, train step, batches and augmentation are used; its
learning-rate schedule is replaced by the sweep, as fastai replaces yours.
"""
import math

import numpy as np
import torch

from recipebench.detectors.base import Detector, register_detector
from recipebench.harness.pipeline import Scheduled

START_LR, END_LR, NUM_IT, BETA, DIVERGE, SKIP_END = 1e-7, 10.0, 100, 0.98, 4.0, 5


def smoothed(losses: list[float], beta: float = BETA) -> list[float]:
    """fastai's ``AvgSmoothLoss``: debiased exponential moving average of the losses."""
    out, val = [], 0.0
    for i, loss in enumerate(losses, 1):
        val = beta * val + (1 - beta) * loss
        out.append(val / (1 - beta ** i))
    return out


def valley(lrs: list[float], losses: list[float]) -> int:
    """fastai's ``valley`` suggestion: the index a third and a half of the way into the
    longest stretch over which the loss keeps decreasing (longest decreasing
    subsequence, O(n^2) as in fastai)."""
    n = len(losses)
    max_start, max_end = 0, 0
    lds = [1] * n
    for i in range(1, n):
        for j in range(i):
            if losses[i] < losses[j] and lds[i] < lds[j] + 1:
                lds[i] = lds[j] + 1
            if lds[max_end] < lds[i]:
                max_end = i
                max_start = max_end - lds[max_end]
    sections = (max_end - max_start) / 3
    return max_start + int(sections) + int(sections / 2)


def sweep_multiplier(step: int) -> float:
    """``SchedExp(start_lr, end_lr)`` as a multiplier of ``START_LR``."""
    return (END_LR / START_LR) ** (step / NUM_IT)


def sweep_scheduler(opt, steps: int, steps_per_epoch: int) -> Scheduled:
    """The sweep as a real torch scheduler stepped every iteration (it replaces the
    pipeline's own, as fastai's callback does)."""
    return Scheduled(torch.optim.lr_scheduler.LambdaLR(opt, sweep_multiplier), interval="step")


@register_detector
class LrFind(Detector):
    """fastai's LR range test (re-created). Clean runs (5 seeds of each pipeline): the
    raw loss falls by 26-100% during the sweep and the pipelines' learning rate lies
    within 0.05-5x of the valley suggestion. The flag leaves a margin of 1.7x on the
    drop and 4-5x on the ratio: a drop under 15%, or a learning rate over 20x above or
    100x below the suggestion."""

    name = "lr_find"
    description = "fastai's lr_find (re-created): the loss falls during an LR sweep, near the chosen LR"
    recipe_step = "peer tool: fastai lr_find re-created (LR range test)"
    stage, kind, cost = "peers", "active", 3
    peer = True
    excludes = frozenset({"gan"})  # the sweep steps one optimizer; a GAN has two
    example_bug = "view_instead_of_permute"
    MIN_DROP, MAX_ABOVE, MAX_BELOW, WINDOW, HEAD = 0.15, 20.0, 100.0, 5, 10

    def check(self, s):
        subject = type(s)(s.pipeline.replace(lr=START_LR, scheduler=sweep_scheduler), s.seed)
        best = [math.inf]

        def diverged(losses):
            smooth = smoothed(losses)[-1]
            best[0] = min(best[0], smooth)
            return not math.isfinite(smooth) or smooth > DIVERGE * best[0]

        losses = subject.train(subject.fresh_model(), NUM_IT, s.batches(), stop=diverged)
        curve = smoothed(losses)
        window = [i for i in range(NUM_IT // 10, len(curve) - SKIP_END) if math.isfinite(curve[i])]
        if len(window) < 3:
            return self.decide(True, math.inf, steps=len(losses), reason="the loss diverged before the suggestion window")
        lrs = [START_LR * sweep_multiplier(i) for i in window]
        suggestion = lrs[valley(lrs, [curve[i] for i in window])]
        moving = np.convolve(losses, np.ones(self.WINDOW) / self.WINDOW, mode="valid")
        head = float(np.mean(losses[: self.HEAD]))
        drop = 1 - float(np.nanmin(moving)) / head if head > 0 else 0.0
        ratio = s.pipeline.lr / suggestion
        score = max(self.MIN_DROP / max(drop, 1e-12), ratio / self.MAX_ABOVE, 1 / (ratio * self.MAX_BELOW))
        return self.decide(score > 1, float(np.log10(score)), steps=len(losses), loss_drop=drop,
                           suggested_lr=suggestion, pipeline_lr=s.pipeline.lr, lr_over_suggestion=ratio)
