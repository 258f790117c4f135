"""A recipe assembled into a Pipeline: data, preparation, model, seams, capabilities."""
from __future__ import annotations

import math
from functools import lru_cache, partial

import numpy as np
import torch

from recipebench.harness.pipeline import Pipeline, call_model, no_scheduler, standard_train_step
from recipebench.harness.pipelines.accumulation import accumulating_step
from recipebench.harness.population import models
from recipebench.harness.population.build import (
    evaluate_fn, loss_fn, optimizer_fn, scheduler_fn)
from recipebench.harness.population.data import CONTEXT, load, minmax_on_train, standardize_targets
from recipebench.harness.population.grammar import Recipe

SOURCE = "recipebench population generator (harness/population): seed {seed}, drawn from the grammar in grammar.py"
N_OUT = {"binary": 1, "multilabel": 4, "regression": 1}


@lru_cache(maxsize=32)
def _data(source: str, inputs: str, seed: int, scale_in_data: bool, denoising: float):
    return load(source, inputs, seed, scale_in_data, denoising)


def _prepare(r: Recipe):
    """``prepare_splits``: scalers fitted on the training split (inputs min-max scaled
    when the harness does not standardize tabular inputs; regression targets
    standardized when the recipe says so). None: the splits are used as loaded."""
    steps = []
    if not r.standardize and r.inputs == "vector" and not r.source.startswith("digit"):
        steps.append(minmax_on_train)
    if r.target_scaling:
        steps.append(standardize_targets)
    if not steps:
        return None

    def prepare(splits):
        for step in steps:
            splits = step(splits)
        return splits
    return prepare


def _n_out(r: Recipe, p: Pipeline) -> int:
    if r.task in N_OUT:
        return N_OUT[r.task]
    if r.task == "reconstruction":
        return 64
    return p.n_classes


def build_model(r: Recipe, p: Pipeline) -> torch.nn.Module:
    """The recipe's model at ``p.width`` times its base width, initialized as drawn;
    the output bias at the prior log-odds / target mean when the recipe inits it."""
    from recipebench.harness.trace import prepared_splits

    w, out = r.width * p.width, _n_out(r, p)
    train = prepared_splits(p).train
    if r.task == "reconstruction":
        net = models.Autoencoder(r, train.x.shape[1], w)
    elif r.model in ("mlp", "residual_mlp"):
        net = models.mlp(train.x.shape[1], out, r, w)
    elif r.model in ("cnn", "residual_cnn"):
        net = models.cnn(out, r, w)
    elif r.model in ("gru", "lstm"):
        vocab = p.n_classes if r.task == "language_model" else 0
        net = models.Recurrent(r, w if vocab else train.x.shape[-1], out, w, p.to_sequence, vocab)
    elif r.model == "attention":
        lm = r.task == "language_model"
        net = models.Attention(r, train.x.shape[-1], out, w, CONTEXT if lm else train.x.shape[1],
                               p.attn_mask if lm else None, p.n_classes if lm else 0)
    else:
        net = models.Bag(r, int(train.x.max()) + 1, out, w)
    net = models.initialize(net, r.init, r.activation)
    if r.task == "reconstruction":
        models.init_mean_image(net, torch.as_tensor(train.y, dtype=torch.float32).mean(0))
    if r.bias_init:
        y = np.asarray(train.y, float)
        value = float(np.log(y.mean() / (1 - y.mean()))) if r.task == "binary" else float(y.mean())
        with torch.no_grad():
            net.head.bias.fill_(value)
    return net


def capabilities(r: Recipe) -> frozenset:
    caps = {"single_optimizer", "width", "feature_layers"}
    caps |= {"classification": {"classification"}, "binary": {"binary"}, "multilabel": {"multilabel"},
             "language_model": {"autoregressive", "window_targets"}, "reconstruction": {"reconstruction"},
             "regression": {"regression"} if r.loss == "l2" else {"robust_regression"}}[r.task]
    if r.source == "digit_vs_rest":
        caps.add("imbalanced")  # one digit against the nine others: ~10% positives
    if r.task == "language_model" and r.model == "attention":
        caps.add("causal_attention")
    if r.standardize:
        caps.add("normalization")
    if _prepare(r) is not None:
        caps.add("split_fitting")
    if r.inputs == "bags":
        caps |= {"structured_batch", "embedding_bag"}
    if r.model in ("gru", "lstm") and r.time_first:
        caps.add("sequence_model")
    if r.dropout > 0 or r.norm == "batchnorm":
        caps.add("dropout_batchnorm")
    if r.bias_init:
        caps.add("output_bias_init")
    if r.clip_norm is not None:
        caps.add("grad_clipping")
    if r.accumulate > 1:
        caps.add("grad_accumulation")
    if r.schedule != "none":
        caps.add("lr_schedule")
        per_epoch = r.schedule in ("step", "multistep") or (r.schedule in ("cosine", "exponential") and not r.per_step)
        caps |= {"epoch_scheduler"} if per_epoch else set()
        caps |= {"warmup_scheduler"} if r.schedule in ("warmup_cosine", "warmup_linear", "onecycle") else set()
        caps |= {"plateau_scheduler"} if r.schedule == "plateau_loss" else set()
        caps |= {"metric_plateau"} if r.schedule == "plateau_metric" else set()
    return frozenset(caps)


def n_classes(r: Recipe, data) -> int:
    if r.task in ("classification", "binary"):
        return int(data.y.max()) + 1
    if r.task == "language_model":
        return int(data.x.max()) + 1
    return {"multilabel": 4, "regression": 1, "reconstruction": 0}[r.task]


def assemble(r: Recipe, name: str, partition: str) -> Pipeline:
    load_data = partial(_data, r.source, r.inputs, r.seed, not r.standardize, r.denoising)
    fields = {}
    forward = call_model
    if r.inputs == "bags":
        from recipebench.harness.pipelines.text_classification import (
            bag_forward, bag_loader, unpack_label_text_offsets)

        forward = bag_forward
        fields.update(loader=bag_loader, unpack=unpack_label_text_offsets, forward=bag_forward)
    if (prepare := _prepare(r)) is not None:
        fields["prepare_splits"] = prepare
    if r.accumulate > 1:
        fields["train_step"] = partial(accumulating_step, every=r.accumulate)
    metric = {"regression": "r2", "reconstruction": "r2", "multilabel": "label_accuracy",
              "language_model": "next_token_accuracy"}.get(r.task, "accuracy")
    return Pipeline(
        name=name, description=f"population draw {r.seed} ({partition}): {r.describe()}",
        source=SOURCE.format(seed=r.seed), partition=partition,
        build_model=partial(build_model, r), load_data=load_data, n_classes=n_classes(r, load_data()),
        capabilities=capabilities(r), task=r.task, metric=metric,
        loss=loss_fn(r), evaluate=evaluate_fn(r, forward), optimizer=optimizer_fn(r),
        scheduler=no_scheduler if r.schedule == "none" else scheduler_fn(r),
        clip_norm=r.clip_norm, batch_size=max(2, r.batch_size // r.accumulate),
        steps=r.updates * r.accumulate, lr=r.lr, **fields)
