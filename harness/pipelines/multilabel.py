"""Jason Brownlee's "Multi-Label Classification with Deep Learning"
(https://machinelearningmastery.com/multi-label-classification-with-deep-learning/)
in PyTorch: the data the script generates, ``make_multilabel_classification(
n_samples=1000, n_features=10, n_classes=3, n_labels=2, random_state=1)`` (10
count-valued features, 3 labels, zero to three per example); its MLP, one hidden
layer of 20 ReLU units with He-uniform weights (``kernel_initializer='he_uniform'``)
and an output layer of 3 with the Keras defaults (Glorot-uniform, zero biases), trained
with a sigmoid per label and binary cross-entropy (here the fused
``BCEWithLogitsLoss`` on logits, as PyTorch's multi-label examples write it), Adam
at Keras' default lr 1e-3, batches of 32 (Keras' default), inputs as generated (not
scaled).

Added to the script (it trains a fixed 100 epochs): the validation split's micro-F1
(threshold 0.5 on each label's probability) drives ``ReduceLROnPlateau(mode="max",
factor=0.1, patience=3)`` stepped at each epoch's end, the pattern of Keras'
``ReduceLROnPlateau(monitor='val_...', mode='max')`` and of PyTorch's scheduler docs
for a metric that should rise. Metric: micro-F1 on the test split (the script reports
exact-match accuracy from rounded probabilities; micro-F1 scores each label decision).

Scaled down: 600 training examples (the script's 10-fold cross-validation becomes one
stratification-free 60/20/20 split of its 1,000), 570 steps = 30 epochs of 19 batches
(the script's 100 epochs).

Bends: none to the API. The scheduler above is an addition to the script, not a bend.

Trivial baselines on the test split: predicting every label present gives micro-F1
0.693 (the labels are dense: 1.6 of 3 per example); the training split's majority
decision per label, 0.758. Measured (torch 2.13 CPU, one thread): 0.43-0.49 s CPU per
run; clean test micro-F1 over seeds 0-4: mean 0.872, range 0.853-0.889; the LR is cut
once, in the last epochs (seed 0), or never.

Split: calibration. The first multi-label task: detectors for multi-label targets
must be designed against it.
"""
from __future__ import annotations

from collections import OrderedDict
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from recipebench.harness.pipeline import Dataset, Pipeline, Scheduled, params_of, register_pipeline

SOURCE = "https://machinelearningmastery.com/multi-label-classification-with-deep-learning/"
N_LABELS = 3


@lru_cache(maxsize=1)
def multilabel_data() -> Dataset:
    """The script's data: X (1000, 10) float32 counts, Y (1000, 3) float32 in {0, 1}."""
    from sklearn.datasets import make_multilabel_classification

    x, y = make_multilabel_classification(n_samples=1000, n_features=10, n_classes=N_LABELS, n_labels=2,
                                          random_state=1)
    return Dataset(x.astype(np.float32), y.astype(np.float32))


def get_model(n_inputs: int = 10, n_outputs: int = N_LABELS) -> nn.Sequential:
    """``Dense(20, relu, he_uniform)`` -> ``Dense(n_outputs)`` (logits; the sigmoid is in the loss)."""
    features = nn.Sequential(nn.Linear(n_inputs, 20), nn.ReLU())  # (B, 20)
    net = nn.Sequential(OrderedDict(features=features, output=nn.Linear(20, n_outputs)))  # (B, 3)
    nn.init.kaiming_uniform_(features[0].weight, nonlinearity="relu")  # he_uniform: U(+-sqrt(6 / fan_in))
    nn.init.xavier_uniform_(net.output.weight)  # Keras' default glorot_uniform
    for bias in (features[0].bias, net.output.bias):
        nn.init.zeros_(bias)  # Keras' default zeros
    return net


def bce_with_logits(output: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(output, y)  # (B, 3) logits vs (B, 3) in {0, 1}


@torch.no_grad()
def micro_f1(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Micro-averaged F1 of the label decisions sigmoid(logit) > 0.5 (logit > 0)."""
    was = model.training
    model.eval()
    pred = model(x) > 0  # (N, 3)
    model.train(was)
    truth = y > 0.5  # (N, 3)
    tp = int((pred & truth).sum())
    fp, fn = int((pred & ~truth).sum()), int((~pred & truth).sum())
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0


def adam(named_params, lr: float) -> torch.optim.Optimizer:
    return torch.optim.Adam(params_of(named_params), lr=lr)


def reduce_on_f1_plateau(opt, steps: int, steps_per_epoch: int) -> Scheduled:
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=0.1, patience=3)
    return Scheduled(plateau, interval="epoch", monitor="val_metric")


@register_pipeline
def multilabel_mlp() -> Pipeline:
    return Pipeline(
        source=f"{SOURCE} (make_multilabel_classification(1000, 10 features, 3 labels, random_state=1), "
               "MLP 10-20-3, sigmoid + BCE, Adam 1e-3, batch 32; in PyTorch with BCEWithLogitsLoss; scaled down to "
               "30 epochs of one 60/20/20 split; added: ReduceLROnPlateau(mode='max') on validation micro-F1)",
        name="multilabel_mlp",
        description="multi-label MLP (10-20-3, He-uniform ReLU) on make_multilabel_classification: BCE with logits, "
                    "Adam, ReduceLROnPlateau(max) on val micro-F1",
        build_model=lambda p: get_model(10, p.n_classes),
        load_data=multilabel_data,
        n_classes=N_LABELS,
        capabilities=frozenset({"multilabel", "metric_plateau", "lr_schedule", "feature_layers",
                                "single_optimizer"}),
        task="multilabel",
        metric="micro_f1",
        loss=bce_with_logits,
        optimizer=adam,
        scheduler=reduce_on_f1_plateau,
        evaluate=micro_f1,
        steps=570,
        batch_size=32,
        lr=1e-3,
        partition="calibration",
    )
