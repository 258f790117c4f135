"""The Subject: all a detector may see of a (possibly mutated) pipeline.

A detector is never told which bug, if any, was injected. It can build a fresh
model, get the exact batches that go into the net, run N training steps, read the
shared trace of the instrumented run, and read the clean reference band.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch
from torch import nn

from recipebench.harness import trace as tr
from recipebench.harness.pipeline import Pipeline


class Unreadable(Exception):
    """Raised by a check that meets a model or batch it cannot read (token lists with
    offsets where it needs an input tensor, a model without an ``nn.Embedding``): the
    harness records ``not_applicable`` with the message, never an error, because the
    code under test is legitimate."""


def input_tensor(x, what: str = "the model's input") -> torch.Tensor:
    """``x`` when it is one tensor; :class:`Unreadable` for a batch part of other
    structure (a tuple of token ids and offsets, a dict)."""
    if not isinstance(x, torch.Tensor):
        raise Unreadable(f"{what} is a {type(x).__name__}, not one tensor")
    return x


@dataclass(frozen=True)
class Reference:
    """Clean-run statistics of the same pipeline on *other* seeds (the baseline)."""

    clean_metrics: tuple = ()


class Subject:
    def __init__(self, pipeline: Pipeline, seed: int, trace: tr.Trace | None = None,
                 reference: Reference | None = None, clean: Pipeline | None = None):
        self.pipeline, self.seed = pipeline, seed
        self._clean = clean  # the unmutated pipeline, for the true metric (never shown to detectors)
        self._trace = trace
        self.reference = reference or Reference()
        self._memo: dict = {}

    # --- metadata a detector may use honestly ------------------------------------
    @property
    def capabilities(self) -> frozenset:
        return self.pipeline.capabilities

    @property
    def n_classes(self) -> int:
        return self.pipeline.n_classes

    @property
    def prepared(self) -> tr.Prepared:
        return tr.prepare(self.pipeline)

    @property
    def class_prior(self) -> np.ndarray:
        """Label frequencies of the training split (classification and binary tasks)."""
        counts = np.bincount(self.prepared.y_train.numpy(), minlength=self.n_classes)
        return counts / counts.sum()

    @property
    def steps_per_epoch(self) -> int:
        return tr.steps_per_epoch(self.pipeline, self.prepared)

    # --- the shared trace ----------------------------------------------------------
    @property
    def trace(self) -> tr.Trace:
        if self._trace is None:
            self._trace = tr.record(self.pipeline, self.seed, self._clean)
        return self._trace

    # --- active experiments ------------------------------------------------------------
    def fresh_model(self, seed: int | None = None) -> nn.Module:
        tr.seed_everything(self.seed if seed is None else seed)
        return self.pipeline.build_model(self.pipeline)

    def batches(self, seed: int | None = None, augment: bool = True,
                x: torch.Tensor | None = None, y: torch.Tensor | None = None) -> Iterator[tuple]:
        """Exactly what the pipeline feeds the net (optionally from a subset x, y)."""
        return tr.batches(self.pipeline, self.prepared, self.seed if seed is None else seed, augment, x, y)

    def train(self, model: nn.Module, steps: int, data: Iterator[tuple] | None = None, stop=None,
              horizon: int | None = None) -> list[float]:
        """Run the pipeline's own optimizers, schedulers and train_step for ``steps``
        steps (or until ``stop(losses)`` returns true); schedulers are sized for
        ``horizon`` steps (default: ``steps``, a training of that length)."""
        data = self.batches() if data is None else data
        return tr.train(self.pipeline, model, data, steps, self.steps_per_epoch, stop=stop,
                        monitored=tr.monitored_values(self.pipeline, model, self.prepared), horizon=horizon)

    def evaluate(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
        return float(self.pipeline.evaluate(model, x, y))

    def forward(self, model: nn.Module, x):
        """The model's output on ``x`` as the pipeline feeds it (its ``forward`` seam)."""
        return self.pipeline.forward(model, x)

    def batch_loss(self, model: nn.Module, x, y) -> torch.Tensor:
        """The pipeline's loss of ``model`` on one batch (its ``step_loss`` seam)."""
        return self.pipeline.step_loss(self.pipeline, model, x, y)

    def memo(self, key: str, fn: Callable[[], object]):
        """Compute once per subject (probes and detectors share expensive experiments)."""
        if key not in self._memo:
            self._memo[key] = fn()
        return self._memo[key]
