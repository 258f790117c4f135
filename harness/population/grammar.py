"""The grammar of recipe choices: one seeded draw of a :class:`Recipe` (plain data).

Every choice is drawn from ``numpy.random.default_rng(seed)`` in a fixed order, so a
seed names exactly one recipe. Which choices are possible depends on earlier ones
(a task fixes the data sources, a data source the model families, an optimizer its
learning-rate range), as a practitioner's script would.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

# task -> (data source, input kind) pairs it can be trained on
SOURCES = {
    "classification": [("digits_image", "image"), ("digits_flat", "vector"), ("digits_rows", "rows"),
                       ("wine", "vector"), ("iris", "vector"), ("breast_cancer", "vector"), ("topic_bags", "bags")],
    "binary": [("breast_cancer", "vector"), ("digit_vs_rest", "vector"), ("digit_vs_rest", "image")],
    "multilabel": [("digit_attributes", "vector"), ("digit_attributes", "image")],
    "regression": [("diabetes", "vector"), ("wine_alcohol", "vector")],
    "language_model": [("markov_text", "tokens")],
    "reconstruction": [("digits_pixels", "vector")],
}
TASK_WEIGHTS = {"classification": 0.40, "binary": 0.14, "multilabel": 0.10, "regression": 0.16,
                "language_model": 0.10, "reconstruction": 0.10}
MODELS = {  # input kind -> model families
    "vector": ["mlp", "residual_mlp"], "image": ["cnn", "residual_cnn"], "rows": ["gru", "lstm", "attention"],
    "tokens": ["gru", "lstm", "attention"], "bags": ["embedding_bag"],
}
ACTIVATIONS = ["relu", "gelu", "tanh", "leaky_relu"]
NORMS = ["none", "batchnorm", "layernorm"]
INITS = ["default", "kaiming", "xavier", "orthogonal"]
# optimizer -> (lr low, lr high) drawn log-uniformly: the ranges practitioners use on small nets
OPTIMIZERS = {"sgd": (0.03, 0.2), "sgd_momentum": (0.01, 0.05), "sgd_nesterov": (0.01, 0.05), "adam": (5e-4, 5e-3),
              "adamw": (5e-4, 5e-3), "rmsprop": (3e-4, 2e-3), "adagrad": (0.01, 0.05), "adadelta": (0.5, 1.0)}
SCHEDULES = ["none", "step", "multistep", "exponential", "cosine", "warmup_cosine", "warmup_linear", "onecycle",
             "plateau_loss", "plateau_metric"]
# examples (x base width 32) one draw may train on: about 1 s of one CPU thread per model family
EXAMPLES = {"mlp": 40000, "residual_mlp": 30000, "autoencoder": 40000, "embedding_bag": 60000, "cnn": 7000,
            "residual_cnn": 3500, "gru": 8000, "lstm": 7000, "attention": 10000}
RNN_SGD_MIN_LR = 0.1  # plain SGD on recurrent nets needs a larger step to move in 1 s


@dataclass(frozen=True)
class Recipe:
    seed: int
    task: str
    source: str
    inputs: str  # vector | image | rows | tokens | bags
    model: str
    width: int  # hidden units (or channels, embedding size) of the base model
    depth: int  # hidden layers / blocks / recurrent layers
    activation: str
    norm: str
    dropout: float
    init: str
    time_first: bool  # recurrent nets: batch_first=False, the to_sequence seam reshapes (B, T, F) -> (T, B, F)
    standardize: bool  # inputs standardized with training-split statistics (else scaled in the data)
    loss: str  # cross_entropy | bce | l2 | huber | l1 | mse | bce_pixels
    label_smoothing: float
    bias_init: bool  # output bias set to the prior log-odds / target mean
    target_scaling: bool  # regression targets standardized with a scaler fitted on the training split
    denoising: float  # reconstruction: input noise (0: plain autoencoder)
    optimizer: str
    lr: float
    weight_decay: float
    schedule: str
    per_step: bool  # cosine/exponential: stepped per optimizer step instead of per epoch
    batch_size: int  # examples per optimizer step (the micro-batch is batch_size // accumulate)
    accumulate: int  # loader batches per optimizer step
    clip_norm: float | None
    updates: int  # optimizer steps

    def describe(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in asdict(self).items() if k != "seed")


def _pick(rng, options, weights=None):
    if weights is not None:
        weights = np.asarray(weights, float) / np.sum(weights)
    return options[int(rng.choice(len(options), p=weights))]


def _log_uniform(rng, lo: float, hi: float) -> float:
    return float(f"{math.exp(rng.uniform(math.log(lo), math.log(hi))):.3g}")


def choose(seed: int) -> Recipe:
    """The recipe of generator seed ``seed`` (deterministic; no training, no data)."""
    rng = np.random.default_rng([seed, 20261204])
    task = _pick(rng, list(TASK_WEIGHTS), list(TASK_WEIGHTS.values()))
    source, inputs = _pick(rng, SOURCES[task])
    model = _pick(rng, MODELS[inputs]) if task != "reconstruction" else "autoencoder"
    recurrent = model in ("gru", "lstm")
    width = _pick(rng, {"embedding_bag": [16, 32, 64], "attention": [16, 32], "cnn": [8, 16], "residual_cnn": [8, 16],
                        "gru": [32, 64], "lstm": [32, 64]}.get(model, [32, 64, 128]))
    depth = _pick(rng, [1, 2]) if model in ("gru", "lstm", "attention", "cnn", "residual_cnn", "embedding_bag") \
        else _pick(rng, [1, 2, 3])
    activation = _pick(rng, ACTIVATIONS)
    norm = "none" if recurrent or model == "embedding_bag" else _pick(rng, NORMS)
    if model == "attention":
        norm = "layernorm"  # a transformer block carries its LayerNorms
    dropout = _pick(rng, [0.0, 0.0, 0.1, 0.2, 0.3]) if task != "reconstruction" else 0.0
    init = _pick(rng, INITS)
    time_first = bool(recurrent and rng.random() < 0.5)
    standardize = inputs in ("vector", "image", "rows") and task != "reconstruction" and bool(rng.random() < 0.75)
    loss = {"classification": "cross_entropy", "binary": "bce", "multilabel": "bce",
            "language_model": "cross_entropy"}.get(task)
    if task == "regression":
        loss = _pick(rng, ["l2", "l2", "huber", "l1"])
    if task == "reconstruction":
        loss = _pick(rng, ["mse", "bce_pixels"])
    label_smoothing = _pick(rng, [0.0, 0.0, 0.05, 0.1]) if task == "classification" else 0.0
    bias_init = task in ("binary", "regression") and bool(rng.random() < 0.5)
    target_scaling = task == "regression" and not bias_init and bool(rng.random() < 0.7)
    denoising = _pick(rng, [0.0, 0.2, 0.4]) if task == "reconstruction" else 0.0
    optimizer = _pick(rng, list(OPTIMIZERS), [1, 1.5, 1, 2.5, 1.5, 1, 0.7, 0.5])
    lo, hi = OPTIMIZERS[optimizer]
    if optimizer == "sgd" and (recurrent or model == "attention"):
        lo = max(lo, RNN_SGD_MIN_LR)
    lr = _log_uniform(rng, lo, hi)
    weight_decay = 0.0
    if optimizer == "adamw":
        weight_decay = _pick(rng, [0.01, 0.05, 0.1])
    elif rng.random() < 0.35 and optimizer != "adadelta":
        weight_decay = _pick(rng, [1e-5, 1e-4, 5e-4])
    schedule = _pick(rng, SCHEDULES, [3, 1, 1, 1, 1.5, 1.5, 1, 1, 1, 1])
    per_step = schedule in ("cosine", "exponential") and bool(rng.random() < 0.5)
    batch_size = _pick(rng, [16, 32, 64] if source in ("wine", "iris") else [32, 64, 128])
    accumulate = _pick(rng, [1, 1, 1, 2, 4]) if batch_size >= 32 else 1
    clip_norm = _pick(rng, [None, None, 0.5, 1.0, 5.0])
    if recurrent and clip_norm is None and rng.random() < 0.5:
        clip_norm = 1.0  # clipping is the habit with recurrent nets
    updates = _pick(rng, [120, 160, 200, 250])
    updates = max(60, min(updates, int(EXAMPLES[model] * (32 / width) ** 0.5 / batch_size)))
    return Recipe(seed, task, source, inputs, model, width, depth, activation, norm, dropout, init, time_first,
                  standardize, loss, label_smoothing, bias_init, target_scaling, denoising, optimizer, lr,
                  weight_decay, schedule, per_step, batch_size, accumulate, clip_norm, updates)
