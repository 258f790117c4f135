"""fastai's learning-rate finder, ``Learner.lr_find`` (fastai 2.8.12, Apache-2.0), run by
fastai itself when it is installed, else by a re-creation from fastai's source, default
for default (the evidence says which: ``implementation``).

fastai's metadata pulls torchvision and spaCy (several GB beside the CPU torch wheel),
but ``fastai.basics`` and ``fastai.callback.schedule`` import without them:
``pip install --no-deps fastai==2.8.12 fastcore==2.2.39 fasttransform==0.0.5
fastprogress==1.0.3 fastdownload==0.0.8 plum-dispatch==2.9.0 beartype==0.23.1`` and
``pip install rich`` (fastprogress 1.1 needs python-fasthtml, a web framework: 1.0.3
does not). With fastai, the adapter builds a ``Learner`` over the pipeline's fresh model,
its optimizer (wrapped in fastai's ``OptimWrapper``) and the first 100 batches of
``s.batches()``, and calls ``learn.lr_find()``: fastai's own ``LRFinder`` callback sets
the learning rate, its ``Recorder`` smooths the loss and stops on divergence, and its
``valley`` picks the suggestion. One callback runs the pipeline's own train step for
each batch (fastai's pattern for a custom step: do the step in ``before_batch``, hand
the loss to the learner, cancel fastai's default step), so gradient clipping and any
bug in the step act as in the pipeline. On digits, fastai reproduces the re-creation
step for step: seeds 0-4 give the same losses, the same loss drop (0.72-0.78) and the
same valley suggestion (0.83e-3, 1.45e-3, 1.74e-3, 3.02e-3, 4.36e-3 against the
pipeline's 3e-3); pipelines with dropout draw other dropout masks (fastai's data loader
consumes torch's global generator), so their curves differ by noise (imbalanced seed 0:
valley 7.6e-3 against 1.6e-2; vae 3.0e-3 against 2.1e-3; same verdicts). The
calibration pipelines pass clean with either, except lstm_lm, flagged by both (its SGD
lr 20 is 726x the valley of 0.0275; a strict xfail in ``tests/test_peers.py``). fastai costs about 1.6x the re-creation (0.9-1.1 s against
0.5-0.6 s per digits run) and ~5 s more for the first call in a process (imports).
torch-lr-finder 0.2.2 (``--no-deps``) runs too, but its suggestion (steepest slope of
its smoothed curve) moved from 0.015 to 1.3 across digits seeds 0-4, 5-430x the
pipeline's learning rate: not used.

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
import tempfile
import warnings

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


def fastai_range_test(s) -> tuple[list[float], list[float], list[float]] | None:
    """``Learner.lr_find`` by fastai on the pipeline: (raw losses, learning rates, fastai's
    smoothed losses), or None when fastai is not installed or the optimizer seam builds
    several optimizers (fastai's ``Learner`` holds one)."""
    try:
        with warnings.catch_warnings():  # fastai's import adds warning filters; keep the worker's as they were
            import fastai.callback.schedule  # noqa: F401  patches Learner.lr_find
            from fastai.basics import Callback, CancelBatchException, DataLoader, DataLoaders, Learner, OptimWrapper
            from fastai.callback.progress import ProgressCallback
            from fastai.callback.schedule import LRFinder
    except ImportError:
        return None
    from recipebench.harness.pipeline import StepContext

    p = s.pipeline
    model = s.fresh_model()
    opt = p.optimizer([(n, q) for n, q in model.named_parameters() if q.requires_grad], START_LR)
    if isinstance(opt, (list, tuple)):
        return None
    data = iter(s.batches())
    train = [next(data) for _ in range(NUM_IT)]
    spe = max(1, getattr(s, "steps_per_epoch", 1))
    ctx, raw = StepContext(steps=NUM_IT, steps_per_epoch=spe), []

    class PipelineStep(Callback):
        """The pipeline's train step in place of fastai's, at the LR fastai just set."""
        order = LRFinder.order + 1

        def before_batch(self):
            if not self.training:
                return
            ctx.step = self.learn.train_iter
            ctx.epoch, ctx.batch_idx = divmod(ctx.step, spe)
            loss = p.train_step(p, self.learn.model, opt, *self.learn.xb, *self.learn.yb, ctx).detach()
            self.learn.loss = self.learn.loss_grad = loss
            raw.append(float(loss))
            raise CancelBatchException  # fastai's Recorder and LRFinder still run after_batch

    dls = DataLoaders(DataLoader(train, bs=None), DataLoader(train[:1], bs=None), device="cpu")
    with tempfile.TemporaryDirectory() as tmp:  # LRFinder saves and restores the model there
        learn = Learner(dls, model, loss_func=p.loss, opt_func=lambda params, lr, **_: OptimWrapper(opt=opt),
                        path=tmp, cbs=[PipelineStep()])
        learn.remove_cb(ProgressCallback)
        learn.lr_find(start_lr=START_LR, end_lr=END_LR, num_it=NUM_IT, stop_div=True, show_plot=False,
                      suggest_funcs=None)
    return raw, [float(lr) for lr in learn.recorder.lrs], [float(v) for v in learn.recorder.losses]


@register_detector
class LrFind(Detector):
    """fastai's LR range test (fastai itself, or the re-creation). Clean runs (5 seeds of each pipeline): the
    raw loss falls by 26-100% during the sweep and the pipelines' learning rate lies
    within 0.05-5x of the valley suggestion. The flag leaves a margin of 1.7x on the
    drop and 4-5x on the ratio: a drop under 15%, or a learning rate over 20x above or
    100x below the suggestion."""

    name = "lr_find"
    description = "fastai's lr_find: the loss falls during an LR sweep, near the chosen LR"
    recipe_step = "peer tool: fastai lr_find (LR range test)"
    stage, kind, cost = "peers", "active", 3
    peer = True
    excludes = frozenset({"gan"})  # the sweep steps one optimizer; a GAN has two
    example_bug = "view_instead_of_permute"
    MIN_DROP, MAX_ABOVE, MAX_BELOW, WINDOW, HEAD = 0.15, 20.0, 100.0, 5, 10

    def check(self, s):
        run = fastai_range_test(s)
        if run is not None:
            from importlib.metadata import version

            from fastai.callback.schedule import valley as suggest  # fastai's own suggestion function
            losses, lrs, curve = run
            implementation = f"fastai {version('fastai')} Learner.lr_find"
        else:
            subject = type(s)(s.pipeline.replace(lr=START_LR, scheduler=sweep_scheduler), s.seed)
            best = [math.inf]

            def diverged(losses):
                smooth = smoothed(losses)[-1]
                best[0] = min(best[0], smooth)
                return not math.isfinite(smooth) or smooth > DIVERGE * best[0]

            losses = subject.train(subject.fresh_model(), NUM_IT, s.batches(), stop=diverged)
            curve = smoothed(losses)
            lrs = [START_LR * sweep_multiplier(i) for i in range(len(curve))]
            implementation = "re-creation (fastai not installed)"

            def suggest(lrs, losses, num_it):
                return lrs[valley(lrs, losses)], None
        # the suggestion window of fastai's lr_find: without the first num_it // 10 and the
        # last 5 points, cut at the first non-finite smoothed loss
        window = list(range(NUM_IT // 10, len(curve) - SKIP_END))
        window = window[: next((k for k, i in enumerate(window) if not math.isfinite(curve[i])), len(window))]
        if len(window) < 3:
            return self.decide(True, math.inf, steps=len(losses), reason="the loss diverged before the suggestion window",
                               implementation=implementation)
        suggestion = float(suggest([lrs[i] for i in window], [curve[i] for i in window], NUM_IT)[0])
        moving = np.convolve(losses, np.ones(self.WINDOW) / self.WINDOW, mode="valid")
        head = float(np.mean(losses[: self.HEAD]))
        drop = 1 - float(np.nanmin(moving)) / head if head > 0 else 0.0
        ratio = s.pipeline.lr / suggestion
        score = max(self.MIN_DROP / max(drop, 1e-12), ratio / self.MAX_ABOVE, 1 / (ratio * self.MAX_BELOW))
        return self.decide(score > 1, float(np.log10(score)), steps=len(losses), loss_drop=drop,
                           suggested_lr=suggestion, pipeline_lr=s.pipeline.lr, lr_over_suggestion=ratio,
                           implementation=implementation)
