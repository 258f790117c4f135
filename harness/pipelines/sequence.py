"""Sequence model: the 8 rows of a digit image read one per time step by a GRU with
``batch_first=False``, so the batch-first data is reshaped to time-first at the
``to_sequence`` seam (where view-vs-permute bugs live)."""
from functools import lru_cache

import numpy as np
from torch import nn

from recipebench.harness.pipeline import Dataset, Pipeline, register_pipeline
from recipebench.harness.pipelines.common import digits as load_digits


@lru_cache(maxsize=1)
def rows() -> Dataset:
    d = load_digits()
    return Dataset(d.x[:, 0] / np.float32(16.0), d.y)  # (N, T=8, F=8), values in [0, 1]


class RowGRU(nn.Module):
    def __init__(self, to_sequence, n_classes: int = 10, hidden: int = 48):
        super().__init__()
        self.to_sequence = to_sequence
        self.gru = nn.GRU(8, hidden)  # batch_first=False: expects (T, B, F)
        self.head = nn.Linear(hidden, n_classes)

    def forward(self, x):  # x: (B, T, F)
        seq = self.to_sequence(x)  # (T, B, F)
        _, h = self.gru(seq)  # h: (1, B, hidden)
        return self.head(h[-1])  # (B, n_classes)


@register_pipeline
def sequence() -> Pipeline:
    return Pipeline(
        source='written for recipebench: time-first GRU as in torch.nn.GRU(batch_first=False) usage',
        name="sequence",
        description="digit rows as an 8-step sequence into a time-first GRU, Adam, grad-norm clip 1.0",
        build_model=lambda p: RowGRU(p.to_sequence, p.n_classes, hidden=48 * p.width),
        load_data=rows,
        n_classes=10,
        capabilities=frozenset({"classification", "sequence_model", "lr_schedule", "grad_clipping", "width",
                                "feature_layers", "single_optimizer"}),
        steps=200,
        lr=1e-2,
        clip_norm=1.0,
    )
