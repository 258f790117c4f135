"""Gradient accumulation across loader batches, as Hugging Face's Trainer, Lightning's
``accumulate_grad_batches`` and most large-batch scripts write it: one ``train_step``
per loader batch, the optimizer stepping on every ``every``-th batch and on an epoch's
last (:meth:`recipebench.harness.pipeline.StepContext.accumulation_boundary`).

Shared by the pipelines that accumulate (``hf_trainer_accum``, the generated
population's draws). Its keyword switches are the mistakes ``bugs/accumulation.py``
turns on with ``functools.partial``, as a GAN's ``train_step`` takes its switches.
"""
from __future__ import annotations

import torch
from torch import nn

from recipebench.harness.pipeline import Pipeline, StepContext


def accumulating_step(p: Pipeline, model: nn.Module, opt, x, y, ctx: StepContext, *, every: int,
                      scale_loss: bool = True, zero_grad_every_batch: bool = False) -> torch.Tensor:
    """One loader batch: loss / ``every``, backward; at the boundary clip, step and zero
    the gradients (the harness then steps the scheduler, as the Trainer calls
    ``lr_scheduler.step()`` right after ``optimizer.step()``). Returns the batch's
    unscaled loss (the harness records one loss per batch).

    ``scale_loss=False`` backpropagates the batch's loss undivided (the stepped gradient
    is ``every`` times the mean's); ``zero_grad_every_batch`` zeroes the gradients before
    every batch (a non-accumulating loop's ``zero_grad()`` kept: only the window's last
    batch is stepped on)."""
    if zero_grad_every_batch:
        opt.zero_grad()
    loss = p.step_loss(p, model, x, y)
    (loss / every if scale_loss else loss).backward()
    if ctx.accumulation_boundary(every):
        if p.clip_norm is not None:
            p.clip(model, p.clip_norm)
        opt.step()
        opt.zero_grad()
    return loss
