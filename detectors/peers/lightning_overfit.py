"""PyTorch Lightning's ``Trainer(overfit_batches=1)`` (PyPI ``pytorch-lightning`` 2.6.6,
Lightning AI, Apache-2.0; https://lightning.ai/docs/pytorch/stable/debug/debugging_basic.html
and the ``overfit_batches`` flag of ``Trainer``): Lightning's switch for the recipe's
"overfit one batch". Lightning's docs (Debugging, "Overfit your model on a Subset of
Data"): "A good debugging technique is to take a tiny portion of your data (say 2
samples per class), and try to get your model to overfit. If it can't, it's a sign it
won't work with large datasets." ``overfit_batches=1`` trains on the first batch of the
training loader only, every epoch, with shuffling turned off. The pip package pulls
``torchmetrics``, ``lightning-utilities`` and ``aiohttp`` (for fsspec), no torchvision and
no CUDA wheels (``pip install pytorch-lightning==2.6.6``; checked with ``pip install
--dry-run``).

What runs: a ``LightningModule`` wrapping the pipeline's seams: the fresh model
(``build_model``), ``training_step`` = the ``step_loss`` seam (the ``loss`` seam on the
``forward`` of the model by default), ``configure_optimizers`` = the ``optimizer`` seam
over the parameters that require gradients (as the harness builds it), and
``configure_gradient_clipping`` = the ``clip`` seam at the pipeline's ``clip_norm``
(Lightning calls it before every optimizer step); Lightning's own loop does
``zero_grad``, backward and ``optimizer.step(closure)``. The training data is the first
batch the pipeline's ``loader`` yields on the training split (``s.batches()``: its order,
``unpack`` and augmentation), handed to Lightning as a one-batch loader:
``overfit_batches=1`` takes the first batch of the unshuffled loader, and the pipeline's
loader is built on its own sampler, which Lightning's re-instantiation with a
``SequentialSampler`` would turn into single examples. ``Trainer(overfit_batches=1,
max_epochs=EPOCHS, accelerator="cpu", logger=False, enable_checkpointing=False,
enable_progress_bar=False, enable_model_summary=False)``: ``EPOCHS`` optimizer steps on
that batch. The pipeline's LR schedule is not attached (the check asks whether the
model, loss and optimizer can fit one batch, at the pipeline's learning rate); a
pipeline that builds several optimizers (GANs) is ``not_applicable`` (Lightning's
automatic optimization steps one).

How it is read: Lightning leaves the reading to the user ("if it can't [overfit], it's a
sign it won't work"); the training loss of the batch is what its progress bar shows. A
model that can overfit one batch drives that loss to a small fraction of where it
started. The rule: flagged when the mean loss of the last ``TAIL`` steps is above
``MAX_FRACTION`` of the first step's loss (score: that ratio over ``MAX_FRACTION``).
``MAX_FRACTION = 0.1``: a model that cannot remove 90% of the loss on 64 examples it sees
``EPOCHS`` times has not overfit them. Measured at seed 0 with ``EPOCHS = 100``: clean
digits ends at 0.0011 of its start and clean tabular_onecycle at 0.0034 (30-90x below
the bound); digits with ``clipped_loss_not_gradients@high`` (losses above 2.0 get no gradient,
so every example at init is frozen) ends at 1.0. A loss that is not positive at the
start (a score that can be negative) is ``not_applicable``.
"""
from __future__ import annotations

import logging
import math
import warnings

import numpy as np
import torch

from recipebench.detectors.base import Detector, Outcome, Verdict, register_detector

INSTALL = "pip install pytorch-lightning==2.6.6"
EPOCHS, TAIL, MAX_FRACTION = 100, 5, 0.1


class OneBatch:
    """A loader of one batch (Lightning reads a plain list as a list of loaders)."""

    def __init__(self, batch):
        self.batch = batch

    def __iter__(self):
        yield self.batch

    def __len__(self):
        return 1


def overfit_losses(s) -> list[float]:
    """Lightning's ``Trainer(overfit_batches=1)`` on the pipeline's seams; the training
    loss at each of its ``EPOCHS`` steps."""
    import pytorch_lightning as pl

    p = s.pipeline
    model = s.fresh_model()
    batch = next(iter(s.batches()))
    losses: list[float] = []

    class Overfit(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.model = model

        def training_step(self, b, batch_idx):
            x, y = b
            loss = p.step_loss(p, self.model, x, y)
            losses.append(float(loss.detach()))
            return loss

        def configure_optimizers(self):
            return p.optimizer([(n, q) for n, q in self.model.named_parameters() if q.requires_grad], p.lr)

        def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
            if p.clip_norm is not None:
                p.clip(self.model, p.clip_norm)

    module = Overfit()
    opt = module.configure_optimizers()
    if isinstance(opt, (list, tuple)) and len(opt) != 1:
        raise ValueError("several optimizers")
    quiet = [logging.getLogger(n) for n in ("pytorch_lightning", "lightning", "lightning.pytorch", "lightning_fabric")]
    levels = [lg.level for lg in quiet]
    for lg in quiet:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trainer = pl.Trainer(overfit_batches=1, max_epochs=EPOCHS, accelerator="cpu", devices=1, logger=False,
                                 enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                                 num_sanity_val_steps=0)
            trainer.fit(module, train_dataloaders=OneBatch(batch))
    finally:
        for lg, level in zip(quiet, levels):
            lg.setLevel(level)
    return losses


@register_detector
class LightningOverfit(Detector):
    name = "lightning_overfit"
    description = "Lightning Trainer(overfit_batches=1): the loss on one batch does not fall to a tenth of its start"
    recipe_step = "peer tool: PyTorch Lightning overfit_batches (overfit one batch)"
    stage, kind, cost = "peers", "active", 3
    peer = True
    example_bug = "clipped_loss_not_gradients@high"

    def check(self, s):
        try:
            import pytorch_lightning  # noqa: F401
        except ImportError:
            return Verdict(Outcome.ERROR, evidence={"message": f"pytorch-lightning is not installed: {INSTALL}"})
        try:
            losses = overfit_losses(s)
        except ValueError as exc:
            if "several optimizers" not in str(exc):
                raise
            return Verdict(Outcome.NOT_APPLICABLE, evidence={"reason": "the pipeline builds several optimizers; "
                                                                        "Lightning's automatic optimization steps one"})
        if not losses or not losses[0] > 0 or not math.isfinite(losses[0]):
            return Verdict(Outcome.NOT_APPLICABLE, evidence={"reason": f"first loss {losses[:1]} is not positive"})
        end = float(np.mean(losses[-TAIL:]))
        ratio = end / losses[0] if math.isfinite(end) else math.inf
        return self.decide(ratio > MAX_FRACTION, ratio / MAX_FRACTION, steps=len(losses), first_loss=losses[0],
                           final_loss=end, final_over_first=ratio)
