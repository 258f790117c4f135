"""Fine-tuning: a CNN backbone pretrained inside the harness on digits 0-4 (with its
own normalization), fine-tuned on a small split of digits 5-9. The fine-tuning data
must be normalized with the statistics the backbone was pretrained with."""
from functools import lru_cache

import numpy as np
import torch

from harness.pipeline import Dataset, Normalizer, Pipeline, Splits, channel_stats, register_pipeline, stratified_split
from harness.pipelines.common import SmallCNN, digits as load_digits
from harness.trace import Prepared, batches, seed_everything, train

PRETRAIN_STEPS = 250


def _subset(d: Dataset, classes) -> Dataset:
    keep = np.isin(d.y, classes)
    return Dataset(d.x[keep], d.y[keep] - min(classes))


@lru_cache(maxsize=1)
def pretrained() -> tuple[dict, Normalizer]:
    """Backbone weights and normalizer from pretraining on digits 0-4 (seed 0, cached)."""
    src = _subset(load_digits(), range(0, 5))
    x, y = torch.as_tensor(src.x), torch.as_tensor(src.y)
    norm = channel_stats(x)
    xn = (x - norm.mean.view(1, -1, 1, 1)) / norm.std.view(1, -1, 1, 1)
    base = Pipeline(name="pretrain", description="", build_model=lambda p: SmallCNN(5), load_data=lambda: src, n_classes=5)
    prep = Prepared(xn, y, xn, y, xn, y, norm)
    seed_everything(0)
    model = SmallCNN(5)
    train(base, model, batches(base, prep, seed=0), PRETRAIN_STEPS, spe=1)
    return {k: v.clone() for k, v in model.features.state_dict().items()}, norm


def build(p: Pipeline) -> SmallCNN:
    model = SmallCNN(p.n_classes)
    model.features.load_state_dict(pretrained()[0])
    return model


def target_split(data: Dataset) -> Splits:
    """Few-shot fine-tuning: 15% of digits 5-9 for training, the rest for val/test."""
    return stratified_split(data, val=0.35, test=0.5)


@register_pipeline
def finetune() -> Pipeline:
    return Pipeline(
        name="finetune",
        description="CNN backbone pretrained on digits 0-4, fine-tuned on few examples of digits 5-9",
        build_model=build,
        load_data=lambda: _subset(load_digits(), range(5, 10)),
        split=target_split,
        fit_normalizer=lambda x_train: pretrained()[1],
        n_classes=5,
        capabilities=frozenset({"classification", "normalization", "pretrained_backbone"}),
        steps=60,
        batch_size=32,
        lr=1e-3,
    )
