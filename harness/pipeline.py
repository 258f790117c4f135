"""The Pipeline: a frozen training setup made of named, replaceable seams.

A bug is a small substitution (``pipeline.replace(loss=...)``), never a fork of the
code. Seams and what they receive and return (the public API for writing a bug):

=================  ===============================================================
seam               signature
=================  ===============================================================
load_data          ``() -> Dataset``  full arrays; X float32 (N, C, H, W) or (N, T, F)
split              ``(Dataset) -> Splits``  train / val / test
fit_normalizer     ``(x_train) -> Normalizer``  per-channel mean and std
normalize          ``(x, Normalizer) -> x``  applied to every split before training
order              ``(n, generator, y) -> LongTensor``  example order of one training epoch
augment            ``(x, y, generator) -> (x, y)``  per training batch
build_model        ``(pipeline) -> nn.Module``  reads model seams such as ``to_sequence`` and ``width``
to_sequence        ``(x (B, T, F)) -> (T, B, F)``  layout change inside sequence models
attn_mask          ``(T) -> BoolTensor (T, T)``  True where attention is forbidden (causal models)
loss               ``(output, y) -> scalar tensor``
optimizer          ``(params, lr) -> torch.optim.Optimizer``
schedule           ``(step, steps_per_epoch) -> float``  LR multiplier for this step
clip               ``(model, max_norm) -> None``  gradient clipping after backward
train_step         ``(pipeline, model, opt, x, y) -> loss``  zero_grad/forward/backward/clip/step
evaluate           ``(model, x, y) -> float``  the primary metric (higher is better)
=================  ===============================================================
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from recipebench.harness.registry import Registry, RegistryError

CAPABILITIES = {
    "normalization": "inputs are normalized with statistics of the training split",
    "flip_augmentation": "horizontal-flip augmentation whose label must change under the flip",
    "lr_schedule": "a learning-rate schedule seam",
    "grad_clipping": "gradient clipping in the train step",
    "sequence_model": "a model that reshapes batch-first data to time-first",
    "pretrained_backbone": "a backbone pretrained inside the harness, then fine-tuned",
    "classification": "(B, C) logits with a cross-entropy loss over class indices",
    "binary": "one logit per example with a binary cross-entropy loss",
    "regression": "one real output per example with an L2 loss",
    "imbalanced": "a rare positive class (about 10%)",
    "output_bias_init": "the output bias is initialized to the class prior / target mean ('init well')",
    "dropout_batchnorm": "a model with dropout and batch norm (train and eval modes differ)",
    "autoregressive": "a next-token model over sequences with a causal attention mask",
    "width": "build_model honours the width multiplier (the recipe's 'increase capacity a bit')",
}


@dataclass(frozen=True)
class Dataset:
    x: np.ndarray  # float32 inputs
    y: np.ndarray  # int64 labels


@dataclass(frozen=True)
class Splits:
    train: Dataset
    val: Dataset
    test: Dataset


@dataclass(frozen=True)
class Normalizer:
    mean: torch.Tensor  # (C,)
    std: torch.Tensor  # (C,)


# ---- default seams ---------------------------------------------------------------

def channel_stats(x: torch.Tensor) -> Normalizer:
    """Per-channel mean and std over every axis but the channel axis (axis 1)."""
    dims = [d for d in range(x.dim()) if d != 1]
    return Normalizer(x.mean(dim=dims), x.std(dim=dims).clamp_min(1e-6))


def apply_normalizer(x: torch.Tensor, norm: Normalizer) -> torch.Tensor:
    shape = [1, -1] + [1] * (x.dim() - 2)
    return (x - norm.mean.view(shape)) / norm.std.view(shape)


def random_order(n: int, generator: torch.Generator, y: torch.Tensor) -> torch.Tensor:
    return torch.randperm(n, generator=generator)


def no_augment(x, y, generator):
    return x, y


def permute_to_sequence(x: torch.Tensor) -> torch.Tensor:
    return x.permute(1, 0, 2)  # (B, T, F) -> (T, B, F)


def causal_mask(t: int) -> torch.Tensor:
    return torch.triu(torch.ones(t, t, dtype=torch.bool), diagonal=1)  # True = a future position


def cross_entropy(output: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(output, y)


def adam(params, lr: float) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=lr)


def constant_lr(step: int, steps_per_epoch: int) -> float:
    return 1.0


def clip_grad_norm(model: nn.Module, max_norm: float) -> None:
    nn.utils.clip_grad_norm_(model.parameters(), max_norm)


def standard_train_step(p: "Pipeline", model: nn.Module, opt, x, y) -> torch.Tensor:
    opt.zero_grad(set_to_none=True)
    loss = p.loss(model(x), y)
    loss.backward()
    if p.clip_norm is not None:
        p.clip(model, p.clip_norm)
    opt.step()
    return loss


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    was_training = model.training
    model.eval()
    correct = sum(int((model(xb).argmax(-1) == yb).sum()) for xb, yb in zip(x.split(256), y.split(256)))
    model.train(was_training)
    return correct / len(y)


def stratified_split(data: Dataset, val: float = 0.2, test: float = 0.2, seed: int = 0) -> Splits:
    """Fixed stratified split (the data split does not vary with the training seed)."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(data.y))
    strata = data.y if data.y.dtype.kind in "iu" and data.y.ndim == 1 else None  # stratify class labels only
    rest, te = train_test_split(idx, test_size=test, stratify=strata, random_state=seed)
    tr, va = train_test_split(rest, test_size=val / (1 - test), random_state=seed,
                              stratify=None if strata is None else data.y[rest])
    pick = lambda i: Dataset(data.x[i], data.y[i])  # noqa: E731
    return Splits(pick(tr), pick(va), pick(te))


@dataclass(frozen=True)
class Pipeline:
    """A reference training setup: metadata, hyper-parameters and seams (see module doc)."""

    name: str
    description: str
    build_model: Callable[["Pipeline"], nn.Module]
    load_data: Callable[[], Dataset]
    n_classes: int
    capabilities: frozenset = frozenset({"classification"})
    task: str = "classification"
    metric: str = "accuracy"
    steps: int = 150
    batch_size: int = 64
    lr: float = 3e-3  # Adam; the recipe's 3e-4 is for large nets, these are tiny
    clip_norm: float | None = None
    width: int = 1  # capacity multiplier read by build_model where the pipeline offers "width"
    split: Callable[[Dataset], Splits] = stratified_split
    fit_normalizer: Callable[[torch.Tensor], Normalizer] = channel_stats
    normalize: Callable[[torch.Tensor, Normalizer], torch.Tensor] = apply_normalizer
    order: Callable = random_order
    augment: Callable = no_augment
    declared_augmentations: tuple = ()
    to_sequence: Callable[[torch.Tensor], torch.Tensor] = permute_to_sequence
    attn_mask: Callable[[int], torch.Tensor] = causal_mask
    loss: Callable = cross_entropy
    optimizer: Callable = adam
    schedule: Callable[[int, int], float] = constant_lr
    clip: Callable = clip_grad_norm
    train_step: Callable = standard_train_step
    evaluate: Callable = accuracy
    extras: dict = field(default_factory=dict, compare=False)  # free-form, e.g. pretrained weights

    SEAMS = (
        "load_data", "split", "fit_normalizer", "normalize", "order", "augment", "build_model",
        "to_sequence", "attn_mask", "loss", "optimizer", "schedule", "clip", "train_step", "evaluate",
    )

    def replace(self, **changes: Any) -> "Pipeline":
        """A copy with some fields replaced; unknown field names are rejected."""
        valid = {f.name for f in dataclasses.fields(self)}
        bad = sorted(set(changes) - valid)
        if bad:
            raise RegistryError(f"Pipeline has no field(s) {bad}; seams are {list(self.SEAMS)}")
        return dataclasses.replace(self, **changes)


def _validate_pipeline(entry: object) -> str:
    if not callable(entry):
        raise RegistryError(f"a pipeline must be registered as a function returning Pipeline, got {entry!r}")
    name = getattr(entry, "pipeline_name", None) or entry.__name__
    return name


PIPELINES: Registry[Callable[[], Pipeline]] = Registry(
    "pipeline", "recipebench.harness.pipelines", "recipebench.pipelines", _validate_pipeline
)


def register_pipeline(fn: Callable[[], Pipeline]) -> Callable[[], Pipeline]:
    """Register a zero-argument factory that returns a :class:`Pipeline`."""
    return PIPELINES.register(fn)


def get_pipeline(name: str) -> Pipeline:
    p = PIPELINES.get(name)()
    if not isinstance(p, Pipeline):
        raise RegistryError(f"pipeline factory '{name}' returned {type(p).__name__}, not Pipeline")
    return p
