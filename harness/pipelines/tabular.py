"""Tabular pipelines on sklearn's bundled real data: imbalanced binary classification
(breast cancer, malignant subsampled to ~10%) and regression with a target far from
zero (diabetes progression, mean ~152). Both initialize the output bias well (recipe
"init well": the prior log-odds / the target mean)."""
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from recipebench.harness.pipeline import Dataset, Pipeline, register_pipeline

POSITIVE_FRACTION = 0.10


@lru_cache(maxsize=1)
def cancer() -> Dataset:
    from sklearn.datasets import load_breast_cancer

    d = load_breast_cancer()
    y = (d.target == 0).astype(np.int64)  # 1 = malignant, the rare class after subsampling
    rng = np.random.default_rng(0)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    n_pos = int(round(POSITIVE_FRACTION / (1 - POSITIVE_FRACTION) * len(neg)))
    keep = np.sort(np.concatenate([neg, rng.choice(pos, n_pos, replace=False)]))
    # the 10 "standard error" features: informative but not separable (a linear model gets AP ~0.8)
    return Dataset(d.data[keep][:, 10:20].astype(np.float32), y[keep])


@lru_cache(maxsize=1)
def diabetes() -> Dataset:
    from sklearn.datasets import load_diabetes

    d = load_diabetes()
    return Dataset(d.data.astype(np.float32), d.target.astype(np.float32))


class MLP(nn.Module):
    """Linear-BN-ReLU-Dropout-Linear with one output; the output bias starts at ``bias``."""

    def __init__(self, n_in: int, bias: float, hidden: int = 32, dropout: float = 0.2):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(n_in, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Dropout(dropout))
        self.head = nn.Linear(hidden, 1)
        with torch.no_grad():
            self.head.bias.fill_(bias)

    def forward(self, x):  # x: (B, F)
        return self.head(self.body(x))  # (B, 1)


def bce(output, y):
    return F.binary_cross_entropy_with_logits(output.squeeze(-1), y.float())  # (B,) vs (B,)


def mse(output, y):
    return ((output.squeeze(-1) - y) ** 2).mean()  # (B,) vs (B,)


def _outputs(model, x):
    was = model.training
    model.eval()
    with torch.no_grad():
        out = model(x).squeeze(-1)
    model.train(was)
    return out


def average_precision(model, x, y) -> float:
    from sklearn.metrics import average_precision_score

    return float(average_precision_score(y.numpy(), _outputs(model, x).numpy()))


def r2(model, x, y) -> float:
    pred = _outputs(model, x)
    return float(1 - ((pred - y) ** 2).sum() / ((y - y.mean()) ** 2).sum())


def prior_logit(data: Dataset) -> float:
    p = float(np.mean(data.y))
    return float(np.log(p / (1 - p)))


@register_pipeline
def imbalanced() -> Pipeline:
    return Pipeline(
        source='written for recipebench: imbalanced MLP with the recipe\'s "init well" output bias',
        name="imbalanced",
        description="breast cancer (10 standard-error features), malignant subsampled to ~10%, MLP with BN and "
                    "dropout, BCE, output bias = prior log-odds",
        build_model=lambda p: MLP(10, prior_logit(p.load_data()), hidden=32 * p.width),
        load_data=cancer,
        n_classes=2,
        task="binary",
        metric="average_precision",
        capabilities=frozenset({"binary", "imbalanced", "normalization", "output_bias_init", "dropout_batchnorm",
                                "single_optimizer", "width"}),
        loss=bce,
        evaluate=average_precision,
        steps=150,
        batch_size=32,
        lr=1e-3,
    )


@register_pipeline
def regression() -> Pipeline:
    return Pipeline(
        source='written for recipebench: regression MLP with the recipe\'s "init well" bias (target mean)',
        name="regression",
        description="diabetes progression (target mean ~152, sd ~77), MLP, L2 loss, output bias = target mean",
        build_model=lambda p: MLP(10, float(np.mean(p.load_data().y)), hidden=32 * p.width, dropout=0.0),
        load_data=diabetes,
        n_classes=1,
        task="regression",
        metric="r2",
        capabilities=frozenset({"regression", "normalization", "output_bias_init", "lr_schedule", "width",
                                "single_optimizer"}),
        loss=mse,
        evaluate=r2,
        steps=300,
        batch_size=32,
        lr=1e-2,
    )
