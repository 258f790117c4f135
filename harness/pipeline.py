"""The Pipeline: a frozen training setup made of named, replaceable seams.

A bug is a small substitution (``pipeline.replace(loss=...)``), never a fork of the
code. The harness owns the loop (as Lightning's Trainer owns a LightningModule's):
it builds the model, the data loader, the optimizers and schedulers from the seams,
steps schedulers at their declared interval, and observes everything through hooks.
It never rewrites what a seam set (it never overwrites the learning rate).

Seams and what they receive and return (the public API for writing a bug):

=================  ===============================================================
seam               signature
=================  ===============================================================
load_data          ``() -> Dataset``  full arrays; X float32 (N, C, H, W) or (N, T, F)
split              ``(Dataset) -> Splits``  train / val / test
fit_normalizer     ``(x_train) -> Normalizer``  per-channel mean and std
normalize          ``(x, Normalizer) -> x``  applied to every split before training
order              ``(n, generator, y) -> LongTensor``  example order of one epoch (the
                   default loader's sampler)
loader             ``(pipeline, x, y, generator) -> DataLoader``  a torch DataLoader over
                   the training split (workers, samplers, ``worker_init_fn``, collate)
epoch_start        ``(loader, epoch) -> None``  called before each epoch
                   (default: ``loader.sampler.set_epoch(epoch)`` where it exists)
augment            ``(x, y, generator) -> (x, y)``  per training batch
build_model        ``(pipeline) -> nn.Module``  reads model seams such as ``to_sequence``
to_sequence        ``(x (B, T, F)) -> (T, B, F)``  layout change inside sequence models
attn_mask          ``(T) -> BoolTensor (T, T)``  True where attention is forbidden
loss               ``(output, y) -> scalar tensor``
optimizer          ``(named_params, lr) -> Optimizer | tuple[Optimizer, ...]``
                   ``named_params``: ``[(name, Parameter)]`` (param groups by name)
scheduler          ``(optimizer, steps, steps_per_epoch) -> Scheduled | list | None``
                   a real ``torch.optim.lr_scheduler``, its ``interval`` (step/epoch)
                   and, for ReduceLROnPlateau, the ``monitor``ed value
clip               ``(model, max_norm) -> None``  gradient clipping after backward
train_step         ``(pipeline, model, opt, x, y, ctx) -> loss``
                   zero_grad/forward/backward/clip/step; ``ctx`` is a :class:`StepContext`
                   (step, epoch, batch index, ``state`` carried across steps)
evaluate           ``(model, x, y) -> float``  the *reported* metric (higher is better)
=================  ===============================================================

Two metrics per run: the pipeline's ``evaluate`` on its own test split is the
*reported* metric; the harness computes the *true* metric with the clean pipeline's
``evaluate`` on the clean test split's labels (see :func:`recipebench.harness.trace.record`).
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
    "dropout_batchnorm": "a model with dropout or batch norm (train and eval modes differ)",
    "autoregressive": "a next-token model over sequences",
    "causal_attention": "self-attention whose causal mask is the attn_mask seam",
    "window_targets": "x and y hold the same window; the loss shifts it by one (not pre-shifted targets)",
    "width": "build_model honours the width multiplier (the recipe's 'increase capacity a bit')",
    "feature_layers": "trainable layers before the output layer (a block that can be frozen, detached or hidden)",
    "single_optimizer": "one optimizer over every trainable parameter (the optimizer seam may be replaced whole)",
    "epoch_scheduler": "a real torch scheduler declared with interval='epoch' (StepLR, MultiStepLR, cosine per epoch)",
    "warmup_scheduler": "a real torch scheduler with a per-step warmup (interval='step')",
    "plateau_scheduler": "ReduceLROnPlateau monitoring the validation loss",
    "dataloader_workers": "a DataLoader with num_workers > 0 whose Dataset draws random augmentation from numpy, "
                          "seeded per worker by worker_init_fn",
    "epoch_sampler": "a sampler that reshuffles only when told the epoch (DistributedSampler.set_epoch)",
    "gan": "a generator and a discriminator trained by two optimizers in one train_step",
    "tbptt": "truncated backprop through time: the recurrent state is carried across steps in ctx.state",
    "checkpoint": "weights loaded from a state_dict checkpoint (torch.load(weights_only=True))",
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


class OrderSampler(torch.utils.data.Sampler):
    """The default loader's sampler: each epoch, the pipeline's ``order`` seam drawn
    with the run's generator (so a bug in the order is a one-line substitution)."""

    def __init__(self, order: Callable, y: torch.Tensor, generator: torch.Generator):
        self.order, self.y, self.generator = order, y, generator

    def __iter__(self):
        return iter(self.order(len(self.y), self.generator, self.y).tolist())

    def __len__(self) -> int:
        return len(self.y)


def default_loader(p: "Pipeline", x: torch.Tensor, y: torch.Tensor, generator: torch.Generator):
    """A torch DataLoader over the training tensors: the ``order`` seam as sampler,
    whole batches fetched by index (``batch_size=None`` with a BatchSampler: one
    tensor index per batch, not one ``__getitem__`` per example)."""
    from torch.utils.data import BatchSampler, DataLoader, TensorDataset

    batches = BatchSampler(OrderSampler(p.order, y, generator), min(p.batch_size, len(y)), drop_last=True)
    # the loader's own generator (it draws a worker base seed per epoch): a private
    # stream, so neither the run's generator nor torch's global RNG is consumed
    private = torch.Generator().manual_seed(generator.initial_seed() + 1)
    return DataLoader(TensorDataset(x, y), sampler=batches, batch_size=None, generator=private)


def set_sampler_epoch(loader, epoch: int) -> None:
    """What Lightning's loop does before each epoch: ``sampler.set_epoch(epoch)``
    (DistributedSampler reshuffles only when told the epoch)."""
    for sampler in (getattr(loader, "sampler", None), getattr(loader, "batch_sampler", None)):
        for s in (sampler, getattr(sampler, "sampler", None)):
            if hasattr(s, "set_epoch"):
                s.set_epoch(epoch)


def no_augment(x, y, generator):
    return x, y


def permute_to_sequence(x: torch.Tensor) -> torch.Tensor:
    return x.permute(1, 0, 2)  # (B, T, F) -> (T, B, F)


def causal_mask(t: int) -> torch.Tensor:
    return torch.triu(torch.ones(t, t, dtype=torch.bool), diagonal=1)  # True = a future position


def cross_entropy(output: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(output, y)


def params_of(named_params) -> list:
    """The tensors of ``[(name, Parameter)]`` (for optimizers without param groups)."""
    return [q for _, q in named_params]


def adam(named_params, lr: float) -> torch.optim.Optimizer:
    return torch.optim.Adam(params_of(named_params), lr=lr)


def decay_groups(named_params, weight_decay: float) -> list[dict]:
    """The AdamW convention (minGPT, timm, Hugging Face): weight decay on matrices and
    conv kernels only, none on biases, norms and embeddings' 1-d parameters."""
    decay = [q for _, q in named_params if q.dim() >= 2]
    rest = [q for _, q in named_params if q.dim() < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


@dataclass(frozen=True)
class Scheduled:
    """A real torch LR scheduler and when the harness steps it, as Lightning's
    ``lr_scheduler_config``: ``interval`` "step" (after every optimizer step) or
    "epoch" (after the last batch of an epoch); ``monitor`` names the value given to
    ``ReduceLROnPlateau.step``: "val_loss" (eval-mode loss on the validation split)
    or "train_loss" (mean training loss of the interval)."""

    scheduler: Any
    interval: str = "step"
    monitor: str | None = None

    def __post_init__(self):
        if self.interval not in ("step", "epoch"):
            raise RegistryError(f"Scheduled.interval must be 'step' or 'epoch', got {self.interval!r}")
        if self.monitor not in (None, "val_loss", "train_loss"):
            raise RegistryError(f"Scheduled.monitor must be None, 'val_loss' or 'train_loss', got {self.monitor!r}")


def no_scheduler(optimizer, steps: int, steps_per_epoch: int) -> None:
    return None


@dataclass
class StepContext:
    """What a training step knows: where it is and what it carries."""

    step: int = 0  # optimizer steps taken before this one
    epoch: int = 0
    batch_idx: int = 0  # index of this batch in its epoch
    steps: int = 0  # steps this training runs in all
    steps_per_epoch: int = 1
    state: dict = field(default_factory=dict)  # carried across steps (e.g. a TBPTT hidden state)


def clip_grad_norm(model: nn.Module, max_norm: float) -> None:
    nn.utils.clip_grad_norm_(model.parameters(), max_norm)


def standard_train_step(p: "Pipeline", model: nn.Module, opt, x, y, ctx: StepContext) -> torch.Tensor:
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
    loader: Callable = default_loader
    epoch_start: Callable = set_sampler_epoch
    augment: Callable = no_augment
    declared_augmentations: tuple = ()
    to_sequence: Callable[[torch.Tensor], torch.Tensor] = permute_to_sequence
    attn_mask: Callable[[int], torch.Tensor] = causal_mask
    loss: Callable = cross_entropy
    optimizer: Callable = adam
    scheduler: Callable = no_scheduler
    clip: Callable = clip_grad_norm
    train_step: Callable = standard_train_step
    evaluate: Callable = accuracy
    source: str = ""  # the public training script or recipe this pipeline re-creates
    partition: str = "calibration"  # "calibration": thresholds may look at it; "test": held out (never tuned on)
    extras: dict = field(default_factory=dict, compare=False)  # free-form, e.g. pretrained weights

    SEAMS = (
        "load_data", "split", "fit_normalizer", "normalize", "order", "loader", "epoch_start", "augment",
        "build_model", "to_sequence", "attn_mask", "loss", "optimizer", "scheduler", "clip", "train_step",
        "evaluate",
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
