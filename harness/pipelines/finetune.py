"""Fine-tuning: a CNN backbone pretrained inside the harness on one half of the digits
(with its own normalization), fine-tuned on 30 labelled images (3 per class) of the
other half. The fine-tuning data must be normalized with the statistics the backbone
was pretrained with; the pretrained features are what make 30 examples enough."""
from functools import lru_cache

import numpy as np
import torch

from recipebench.harness.pipeline import Dataset, Normalizer, Pipeline, Splits, channel_stats, register_pipeline
from recipebench.harness.pipelines.common import SmallCNN, digits as load_digits
from recipebench.harness.trace import Prepared, batches, seed_everything, train

PRETRAIN_STEPS = 300
TARGET_TRAIN = 30  # labelled fine-tuning examples


@lru_cache(maxsize=1)
def halves() -> tuple[Dataset, Dataset]:
    """(pretraining half, target half) of the digits, split once with seed 0."""
    d = load_digits()
    order = np.random.default_rng(0).permutation(len(d.y))
    a, b = np.sort(order[: len(order) // 2]), np.sort(order[len(order) // 2:])
    return Dataset(d.x[a], d.y[a]), Dataset(d.x[b], d.y[b])


@lru_cache(maxsize=1)
def pretrained() -> tuple[dict, Normalizer]:
    """Backbone weights and normalizer from pretraining on the first half (seed 0, cached)."""
    src = halves()[0]
    x, y = torch.as_tensor(src.x), torch.as_tensor(src.y)
    norm = channel_stats(x)
    xn = (x - norm.mean.view(1, -1, 1, 1)) / norm.std.view(1, -1, 1, 1)
    base = Pipeline(name="pretrain", description="", build_model=lambda p: SmallCNN(10), load_data=lambda: src,
                    n_classes=10)
    prep = Prepared(xn, y, xn, y, xn, y, norm)
    seed_everything(0)
    model = SmallCNN(10)
    train(base, model, batches(base, prep, seed=0), PRETRAIN_STEPS, spe=1)
    return {k: v.clone() for k, v in model.features.state_dict().items()}, norm


def build(p: Pipeline) -> SmallCNN:
    model = SmallCNN(p.n_classes)  # a fresh head on the pretrained features
    model.features.load_state_dict(pretrained()[0])
    return model


def target_split(data: Dataset) -> Splits:
    """3 labelled images per class for fine-tuning; the rest split into val and test."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(data.y))
    tr, rest = train_test_split(idx, train_size=TARGET_TRAIN, stratify=data.y, random_state=0)
    va, te = train_test_split(rest, test_size=0.5, stratify=data.y[rest], random_state=0)
    pick = lambda i: Dataset(data.x[i], data.y[i])  # noqa: E731
    return Splits(pick(tr), pick(va), pick(te))


@register_pipeline
def finetune() -> Pipeline:
    return Pipeline(
        source='written for recipebench: pretrain-then-finetune, as in the PyTorch transfer learning tutorial',
        name="finetune",
        description="CNN backbone pretrained on half the digits, fine-tuned on 30 labelled images of the other half",
        build_model=build,
        load_data=lambda: halves()[1],
        split=target_split,
        fit_normalizer=lambda x_train: pretrained()[1],
        n_classes=10,
        capabilities=frozenset({"classification", "normalization", "pretrained_backbone", "feature_layers",
                                "single_optimizer"}),
        steps=100,
        batch_size=16,
        lr=3e-4,  # fine-tuning LR: the backbone should move little
    )
