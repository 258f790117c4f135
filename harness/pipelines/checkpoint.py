"""The PyTorch transfer-learning tutorial's pattern (finetuning the convnet) with a
checkpoint that went through ``torch.save``/``torch.load``: a backbone pretrained
inside the harness on one half of the digits (finetune.py's ``pretrained()``) is saved
from an ``nn.DataParallel``-wrapped model (every key prefixed "module.") into an
in-memory buffer, loaded back with ``torch.load(buf, weights_only=True)``, the prefix
stripped, and ``load_state_dict(strict=True)``; a fresh head, and the whole network
fine-tuned on 30 labelled images (3 per class) of the other half.

Tutorial hyper-parameters kept: SGD(lr=1e-3, momentum=0.9), StepLR(step_size=7,
gamma=0.1) stepped per epoch, 25 epochs, batch size 4 with the last partial batch
kept (30 images: 8 batches an epoch, 200 steps), inputs normalized with the pretraining statistics (the tutorial's
ImageNet mean/std). Clean test accuracy (870 images), seeds 0-4: mean 0.812,
range 0.791-0.858; about 0.5 s CPU per run.

Contract of the ``checkpoint`` capability used by bugs: ``build_model(p, *,
strip_prefix=True, strict=True)`` forwards both flags to :func:`load_backbone`.
"""
import io
from functools import lru_cache

import torch
from torch import nn

from torch.utils.data import BatchSampler, DataLoader, TensorDataset

from recipebench.harness.pipeline import OrderSampler, Pipeline, Scheduled, register_pipeline
from recipebench.harness.pipelines.common import SmallCNN
from recipebench.harness.pipelines.finetune import halves, pretrained, target_split

PREFIX = "module."


@lru_cache(maxsize=1)
def checkpoint_bytes() -> bytes:
    """``torch.save(nn.DataParallel(backbone).state_dict())``: the pretrained features, keys "module.*"."""
    backbone = SmallCNN(10).features
    backbone.load_state_dict(pretrained()[0])
    buf = io.BytesIO()
    torch.save(nn.DataParallel(backbone).state_dict(), buf)
    return buf.getvalue()


def load_backbone(model: SmallCNN, *, strip_prefix: bool = True, strict: bool = True) -> SmallCNN:
    """Load the checkpoint into ``model.features``, as the tutorial's weights are loaded."""
    state = torch.load(io.BytesIO(checkpoint_bytes()), weights_only=True)
    if strip_prefix:
        state = {k.removeprefix(PREFIX): v for k, v in state.items()}
    model.features.load_state_dict(state, strict=strict)
    return model


def build(p: Pipeline, *, strip_prefix: bool = True, strict: bool = True) -> SmallCNN:
    model = SmallCNN(p.n_classes)  # fresh head (the tutorial's ``model.fc = nn.Linear(...)``)
    return load_backbone(model, strip_prefix=strip_prefix, strict=strict)


def tutorial_loader(p: Pipeline, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator) -> DataLoader:
    """``DataLoader(shuffle=True, batch_size=4)``: the last, partial batch is kept (30 = 7 x 4 + 2)."""
    batches = BatchSampler(OrderSampler(p.order, y, generator), p.batch_size, drop_last=False)
    private = torch.Generator().manual_seed(generator.initial_seed() + 1)  # not the run's generator
    return DataLoader(TensorDataset(x, y), sampler=batches, batch_size=None, generator=private)


def sgd(named_params, lr: float) -> torch.optim.Optimizer:
    return torch.optim.SGD([q for _, q in named_params], lr=lr, momentum=0.9)


def step_lr(opt, steps: int, steps_per_epoch: int) -> Scheduled:
    return Scheduled(torch.optim.lr_scheduler.StepLR(opt, step_size=7, gamma=0.1), interval="epoch")


@register_pipeline
def finetune_checkpoint() -> Pipeline:
    return Pipeline(
        source="https://pytorch.org/tutorials/beginner/transfer_learning_tutorial.html (finetuning the convnet: "
               "SGD 1e-3 momentum 0.9, StepLR(7, 0.1), 25 epochs, batch 4; backbone pretrained on half the digits, "
               "checkpoint saved from nn.DataParallel, torch.load(weights_only=True), prefix stripped, strict load)",
        name="finetune_checkpoint",
        description="digits backbone checkpoint (DataParallel 'module.' keys, stripped, strict load) fine-tuned on "
                    "30 images, SGD momentum, StepLR per epoch",
        build_model=build,
        load_data=lambda: halves()[1],
        split=target_split,
        fit_normalizer=lambda x_train: pretrained()[1],
        n_classes=10,
        capabilities=frozenset({"classification", "normalization", "pretrained_backbone", "checkpoint",
                                "feature_layers", "single_optimizer", "lr_schedule", "epoch_scheduler"}),
        loader=tutorial_loader,
        optimizer=sgd,
        scheduler=step_lr,
        steps=25 * 8,  # 25 epochs of 8 batches
        batch_size=4,
        lr=1e-3,
        partition="test",
    )
