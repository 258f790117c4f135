"""Worked example: an ordinary PyTorch training script wrapped as a recipebench pipeline.

The script, as one would write it::

    X, y = load_wine(return_X_y=True)                 # + a train/val/test split, standardized
    model = nn.Sequential(nn.Linear(13, 64), nn.ReLU(), nn.Linear(64, 3))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-2, total_steps=300)
    loader = DataLoader(TensorDataset(X, y), batch_size=32, shuffle=True, drop_last=True)
    for step, (x, y) in zip(range(300), cycle(loader)):
        opt.zero_grad(); F.cross_entropy(model(x), y).backward(); opt.step(); sched.step()

Each line becomes a seam: ``load_data`` (the split and standardization are the
defaults: ``stratified_split``, ``channel_stats``/``apply_normalizer``), ``build_model``,
``optimizer`` (named parameters, so decay can skip biases), ``scheduler`` (the real
OneCycleLR, stepped per step; ``steps`` is the length of this training, so an active
detector's 60-step training gets a 60-step cycle), and the default loader and
train step. Run it beside the built-in pipelines::

    recipebench run --pipelines examples/wine_script.py:wine_mlp --bugs none --seeds 3
    recipebench check-bug warmup_stepped_per_epoch --pipelines examples/wine_script.py:wine_mlp
"""
import numpy as np
import torch
from torch import nn

from recipebench.harness.pipeline import Dataset, Pipeline, Scheduled, decay_groups


def load_wine() -> Dataset:
    from sklearn.datasets import load_wine as sklearn_wine

    d = sklearn_wine()
    return Dataset(d.data.astype(np.float32), d.target.astype(np.int64))  # (178, 13), 3 classes


def wine_mlp() -> Pipeline:
    return Pipeline(
        name="wine_mlp",
        description="wine cultivars, 13 features, MLP, AdamW (no decay on biases), OneCycleLR per step",
        source="examples/wine_script.py (the README's worked example)",
        load_data=load_wine,
        n_classes=3,
        capabilities=frozenset({"classification", "normalization", "warmup_scheduler", "lr_schedule",
                                "single_optimizer", "feature_layers"}),
        build_model=lambda p: nn.Sequential(nn.Linear(13, 64), nn.ReLU(), nn.Linear(64, 3)),
        optimizer=lambda named, lr: torch.optim.AdamW(decay_groups(named, 0.01), lr=lr),
        scheduler=lambda opt, steps, spe: Scheduled(
            torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-2, total_steps=steps), interval="step"),
        steps=300,
        batch_size=32,
        lr=1e-3,
    )
