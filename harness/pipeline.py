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
load_data          ``() -> Dataset``  full arrays; X float32 (N, C, H, W) or (N, T, F),
                   or raw values (token ids, strings as an object array, targets of any type)
split              ``(Dataset) -> Splits``  train / val / test
prepare_splits     ``(Splits) -> Splits``  data preparation fitted on the training split and
                   applied to every split (vocabulary, label encoder, target scaler), as
                   scikit-learn's ``fit(train)`` / ``transform(all)``; default: unchanged
fit_normalizer     ``(x_train) -> Normalizer``  per-channel mean and std
normalize          ``(x, Normalizer) -> x``  applied to every split before training
order              ``(n, generator, y) -> LongTensor``  example order of one epoch (the
                   default loader's sampler)
loader             ``(pipeline, x, y, generator) -> DataLoader``  a torch DataLoader over
                   the training split (workers, samplers, ``worker_init_fn``, collate); its
                   batches may have any structure (tuples, dicts, token lists with offsets)
unpack             ``(batch) -> (x, y)``  a loader batch as model input and target, each of
                   any structure (default: the batch's two items)
epoch_start        ``(loader, epoch) -> None``  called before each epoch
                   (default: ``loader.sampler.set_epoch(epoch)`` where it exists)
augment            ``(x, y, generator) -> (x, y)``  per training batch
build_model        ``(pipeline) -> nn.Module``  reads model seams such as ``to_sequence``
forward            ``(model, x) -> output``  how an input reaches the model (default:
                   ``model(**x)`` for a dict, ``model(*x)`` for a tuple, else ``model(x)``);
                   ``x`` is a loader batch's input or rows of a stored split (the fixed
                   batch the harness tracks, a detector's probe), as ``evaluate`` reads them
to_sequence        ``(x (B, T, F)) -> (T, B, F)``  layout change inside sequence models
attn_mask          ``(T) -> BoolTensor (T, T)``  True where attention is forbidden
loss               ``(output, y) -> scalar tensor``
step_loss          ``(pipeline, model, x, y) -> scalar tensor``  the loss of one batch, seeing
                   the whole batch (Lightning's ``training_step``): distillation from a
                   teacher's outputs on ``x``, teacher forcing, pair and triplet losses.
                   Like ``forward``, it also receives rows of a stored split (the
                   subset loss the trace tracks, a detector's probe), so work such as
                   shifting a decoder input belongs here, not in ``unpack``.
                   Default: ``loss(forward(model, x), y)``
optimizer          ``(named_params, lr) -> Optimizer | tuple[Optimizer, ...]``
                   ``named_params``: ``[(name, Parameter)]`` (param groups by name)
scheduler          ``(optimizer, steps, steps_per_epoch) -> Scheduled | list | None``
                   a real ``torch.optim.lr_scheduler``, its ``interval`` (step/epoch)
                   and, for ReduceLROnPlateau, the ``monitor``ed value; ``steps`` and
                   ``steps_per_epoch`` count loader batches (a script that accumulates
                   gradients divides them itself, as Hugging Face's Trainer does)
clip               ``(model, max_norm) -> None``  gradient clipping after backward
train_step         ``(pipeline, model, opt, x, y, ctx) -> loss``  one loader batch:
                   zero_grad/forward/backward/clip/step, stepping the optimizer(s) when
                   the script does (every batch, or every k-th under gradient
                   accumulation: :meth:`StepContext.accumulation_boundary`); ``ctx`` is a
                   :class:`StepContext` (batch, optimizer steps, epoch, ``state``)
evaluate           ``(model, x, y) -> float``  the *reported* metric (higher is better)
=================  ===============================================================

The harness instruments each **optimizer step** (step pre/post hooks), not each
``train_step`` call, and steps a scheduler with interval "step" after each step of
its own optimizer.

Two metrics per run: the pipeline's ``evaluate`` on its own test split is the
*reported* metric; the harness computes the *true* metric with the clean pipeline's
``evaluate`` on the clean test split's labels (see :func:`recipebench.harness.trace.record`).
"""
from __future__ import annotations

import dataclasses
from contextlib import contextmanager
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
    "grad_accumulation": "train_step accumulates gradients over several loader batches per optimizer step",
    "split_fitting": "prepare_splits fits a vocabulary, encoder or scaler on the training split",
    "structured_batch": "loader batches that are not one input tensor (tuples, dicts, token lists with offsets)",
    "embedding_bag": "token lists with offsets fed to an nn.EmbeddingBag",
    "seq2seq": "a sequence-to-sequence model trained with teacher forcing; per-token outputs",
    "multilabel": "several independent binary targets per example (BCE with logits)",
    "reconstruction": "the target is the input itself (autoencoders, denoising)",
    "robust_regression": "real targets with a robust loss (Huber, L1)",
    "distillation": "the loss reads a teacher's outputs on the same inputs",
    "metric_learning": "an embedding trained with a pair or triplet loss",
    "metric_plateau": "ReduceLROnPlateau monitoring a validation metric (mode='max')",
}

TASKS = ("classification", "binary", "regression", "sequence_regression", "language_model", "seq2seq",
         "multilabel", "reconstruction", "metric_learning", "generation")


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


def unchanged_splits(splits: Splits) -> Splits:
    return splits


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


def pair_batch(batch):
    """A loader batch ``(x, y)`` as (model input, target)."""
    x, y = batch
    return x, y


def call_model(model: nn.Module, x):
    """``model(**x)`` for a dict of inputs, ``model(*x)`` for a tuple or list, else ``model(x)``."""
    if isinstance(x, dict):
        return model(**x)
    if isinstance(x, (tuple, list)):
        return model(*x)
    return model(x)


def permute_to_sequence(x: torch.Tensor) -> torch.Tensor:
    return x.permute(1, 0, 2)  # (B, T, F) -> (T, B, F)


def causal_mask(t: int) -> torch.Tensor:
    return torch.triu(torch.ones(t, t, dtype=torch.bool), diagonal=1)  # True = a future position


def cross_entropy(output: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(output, y)


def output_loss(p: "Pipeline", model: nn.Module, x, y) -> torch.Tensor:
    """The default ``step_loss``: the ``loss`` seam on the model's output."""
    return p.loss(p.forward(model, x), y)


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


MONITORS = (None, "val_loss", "train_loss", "val_metric")


@dataclass(frozen=True)
class Scheduled:
    """A real torch LR scheduler and when the harness steps it, as Lightning's
    ``lr_scheduler_config``: ``interval`` "step" (after every step of the optimizer it
    was built on) or "epoch" (after the last batch of an epoch); ``monitor`` names the
    value given to ``ReduceLROnPlateau.step``: "val_loss" (eval-mode loss on the
    validation split), "train_loss" (mean training loss of the interval) or
    "val_metric" (the pipeline's ``evaluate`` on the validation split, higher is
    better: the scheduler's own ``mode`` must be "max", as the script sets it)."""

    scheduler: Any
    interval: str = "step"
    monitor: str | None = None

    def __post_init__(self):
        if self.interval not in ("step", "epoch"):
            raise RegistryError(f"Scheduled.interval must be 'step' or 'epoch', got {self.interval!r}")
        if self.monitor not in MONITORS:
            raise RegistryError(f"Scheduled.monitor must be one of {MONITORS}, got {self.monitor!r}")


def no_scheduler(optimizer, steps: int, steps_per_epoch: int) -> None:
    return None


@dataclass
class StepContext:
    """What a training step knows: where it is and what it carries (Lightning's
    ``batch_idx`` and ``global_step``)."""

    step: int = 0  # train_step calls (loader batches) before this one
    epoch: int = 0
    batch_idx: int = 0  # index of this batch in its epoch
    steps: int = 0  # train_step calls this training makes in all
    steps_per_epoch: int = 1
    state: dict = field(default_factory=dict)  # carried across steps (e.g. a TBPTT hidden state)
    optimizer_steps: int = 0  # steps the (first) optimizer has taken before this call

    def at(self, call: int, optimizer_steps: int) -> "StepContext":
        """The context positioned at loader batch ``call`` (epoch and batch index from
        ``steps_per_epoch``), after ``optimizer_steps`` steps of the first optimizer."""
        self.step = call
        self.epoch, self.batch_idx = divmod(call, self.steps_per_epoch)
        self.optimizer_steps = optimizer_steps
        return self

    def accumulation_boundary(self, every: int) -> bool:
        """True on the batch after which a script accumulating over ``every`` batches
        steps its optimizer: every ``every``-th batch of an epoch and the epoch's last
        (Hugging Face Trainer's rule)."""
        return (self.batch_idx + 1) % every == 0 or self.batch_idx + 1 == self.steps_per_epoch


def clip_grad_norm(model: nn.Module, max_norm: float) -> None:
    nn.utils.clip_grad_norm_(model.parameters(), max_norm)


def standard_train_step(p: "Pipeline", model: nn.Module, opt, x, y, ctx: StepContext) -> torch.Tensor:
    opt.zero_grad(set_to_none=True)
    loss = p.step_loss(p, model, x, y)
    loss.backward()
    if p.clip_norm is not None:
        p.clip(model, p.clip_norm)
    opt.step()
    return loss


@contextmanager
def evaluating(model: nn.Module):
    """The model in eval mode for the block, then back in the mode it was in."""
    was = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was)


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with evaluating(model):
        correct = sum(int((model(xb).argmax(-1) == yb).sum()) for xb, yb in zip(x.split(256), y.split(256)))
    return correct / len(y)


def stratified_split(data: Dataset, val: float = 0.2, test: float = 0.2, seed: int = 0) -> Splits:
    """Fixed split, stratified on class labels (the split does not vary with the training
    seed). Only integer labels of which every value occurs at least 5 times are taken
    for classes: integer regression targets (most values once) are split at random."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(data.y))
    is_labels = data.y.dtype.kind in "iu" and data.y.ndim == 1 and np.unique(data.y, return_counts=True)[1].min() >= 5
    strata = data.y if is_labels else None
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
    prepare_splits: Callable[[Splits], Splits] = unchanged_splits
    fit_normalizer: Callable[[torch.Tensor], Normalizer] = channel_stats
    normalize: Callable[[torch.Tensor, Normalizer], torch.Tensor] = apply_normalizer
    order: Callable = random_order
    loader: Callable = default_loader
    epoch_start: Callable = set_sampler_epoch
    unpack: Callable = pair_batch
    augment: Callable = no_augment
    forward: Callable = call_model
    to_sequence: Callable[[torch.Tensor], torch.Tensor] = permute_to_sequence
    attn_mask: Callable[[int], torch.Tensor] = causal_mask
    loss: Callable = cross_entropy
    step_loss: Callable = output_loss
    optimizer: Callable = adam
    scheduler: Callable = no_scheduler
    clip: Callable = clip_grad_norm
    train_step: Callable = standard_train_step
    evaluate: Callable = accuracy
    source: str = ""  # the public training script or recipe this pipeline re-creates
    partition: str = "calibration"  # "calibration": thresholds may look at it; "test": held out (never tuned on)

    SEAMS = (
        "load_data", "split", "prepare_splits", "fit_normalizer", "normalize", "order", "loader", "epoch_start",
        "unpack", "augment", "build_model", "forward", "to_sequence", "attn_mask", "loss", "step_loss",
        "optimizer", "scheduler", "clip", "train_step", "evaluate",
    )

    def __post_init__(self):
        if self.task not in TASKS:
            raise RegistryError(f"pipeline '{self.name}' has task {self.task!r}; choose from {TASKS}")
        unknown = sorted(set(self.capabilities) - set(CAPABILITIES))
        if unknown:
            raise RegistryError(f"pipeline '{self.name}' declares unknown capabilities {unknown}")

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
