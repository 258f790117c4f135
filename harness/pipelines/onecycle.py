"""fastai's tabular default, ``tabular_learner(dls, layers=[200, 100]).fit_one_cycle(n)``,
re-created in torch on the full breast-cancer data (569 tumours, 30 standardized
features, 2 classes: fastai's ``Normalize`` proc is the normalize seam here).

What is re-created (fastai.tabular.model.TabularModel and callback.schedule):
a BatchNorm on the continuous inputs, then per hidden size ``LinBnDrop(lin_first=True)``
= Linear(bias=False) -> ReLU -> BatchNorm1d -> Dropout (ps=0.1 each, as set through
``tabular_config(ps=...)``), a Linear head with 2 outputs and fastai's
CrossEntropyLossFlat; the optimizer is fastai's Adam with true weight decay
(wd=0.01, decoupled: AdamW) that skips biases and BatchNorm parameters
(``wd_bn_bias=False``), betas (0.9, 0.99), eps 1e-5; batch size 64 with the last
partial batch dropped; ``fit_one_cycle`` is torch's OneCycleLR stepped per batch:
warmup over the first 25% from lr_max/25 (cosine), then cosine down to lr_max/1e5
(final_div_factor 1e5/25), momentum (beta1) cycled 0.95 -> 0.85 -> 0.95.
Scaled: 20 epochs of 5 steps (100 steps) at fit_one_cycle's default lr_max=1e-3.

Clean test accuracy (114 tumours), seeds 0-4: mean 0.965, range 0.965-0.965; about
0.3 s CPU per run on one thread.
"""
from functools import lru_cache

import numpy as np
import torch
from torch import nn

from recipebench.harness.pipeline import Dataset, Pipeline, Scheduled, decay_groups, register_pipeline

HIDDEN, DROPOUT = (200, 100), 0.1


@lru_cache(maxsize=1)
def breast_cancer() -> Dataset:
    """sklearn's full Wisconsin breast-cancer data (569 x 30; 0 = malignant, 1 = benign)."""
    from sklearn.datasets import load_breast_cancer

    d = load_breast_cancer()
    return Dataset(d.data.astype(np.float32), d.target.astype(np.int64))


class TabularMLP(nn.Module):
    """TabularModel without categorical embeddings: bn_cont, [LinBnDrop] * 2, Linear head."""

    def __init__(self, n_cont: int, n_out: int, hidden=HIDDEN, p: float = DROPOUT):
        super().__init__()
        layers, n_in = [nn.BatchNorm1d(n_cont)], n_cont  # bn_cont
        for n in hidden:  # LinBnDrop(n_in, n, act=ReLU, lin_first=True)
            layers += [nn.Linear(n_in, n, bias=False), nn.ReLU(), nn.BatchNorm1d(n), nn.Dropout(p)]
            n_in = n
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(n_in, n_out)

    def forward(self, x):  # x: (B, F)
        return self.head(self.body(x))  # (B, n_out)


def fastai_adam(named_params, lr: float) -> torch.optim.Optimizer:
    """Adam with true weight decay 0.01 on weight matrices only (wd_bn_bias=False)."""
    return torch.optim.AdamW(decay_groups(named_params, 0.01), lr=lr, betas=(0.9, 0.99), eps=1e-5)


def one_cycle(opt, steps: int, steps_per_epoch: int) -> Scheduled:
    """fit_one_cycle(pct_start=0.25, div=25, div_final=1e5, moms=(0.95, 0.85, 0.95)) per step."""
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=[g["lr"] for g in opt.param_groups], total_steps=steps, pct_start=0.25,
        anneal_strategy="cos", div_factor=25.0, final_div_factor=1e5 / 25.0,
        cycle_momentum=True, base_momentum=0.85, max_momentum=0.95)
    return Scheduled(sched, interval="step")


@register_pipeline
def tabular_onecycle() -> Pipeline:
    return Pipeline(
        source="https://docs.fast.ai/tabular.learner.html + https://docs.fast.ai/callback.schedule.html"
               "#learner.fit_one_cycle (tabular_learner defaults, layers [200, 100], fit_one_cycle; scaled to "
               "20 epochs, ps=0.1)",
        name="tabular_onecycle",
        description="breast cancer (30 standardized features), fastai tabular MLP [200, 100] with BN and dropout, "
                    "AdamW wd 0.01, OneCycleLR per step",
        build_model=lambda p: TabularMLP(30, p.n_classes),
        load_data=breast_cancer,
        n_classes=2,
        capabilities=frozenset({"classification", "normalization", "warmup_scheduler", "lr_schedule",
                                "dropout_batchnorm", "feature_layers", "single_optimizer"}),
        task="classification",
        metric="accuracy",
        steps=100,
        batch_size=64,
        lr=1e-3,  # fit_one_cycle's default lr_max
        optimizer=fastai_adam,
        scheduler=one_cycle,
        partition="calibration",
    )
