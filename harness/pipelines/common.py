"""Shared pieces of the reference pipelines: the bundled digits data and a tiny CNN."""
from __future__ import annotations

from functools import lru_cache

import numpy as np
from torch import nn

from recipebench.harness.pipeline import Dataset


@lru_cache(maxsize=1)
def digits() -> Dataset:
    """scikit-learn's bundled 8x8 digits (1797 images, pixel values 0..16), shape (N, 1, 8, 8)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return Dataset(d.images.astype(np.float32)[:, None], d.target.astype(np.int64))


class SmallCNN(nn.Module):
    """conv-relu-conv-relu-pool-linear; keeps spatial position (no global pooling)."""

    def __init__(self, n_classes: int, height: int = 8, width: int = 8, width_mult: int = 1):
        super().__init__()
        c1, c2 = 8 * width_mult, 16 * width_mult
        self.features = nn.Sequential(
            nn.Conv2d(1, c1, 3, padding=1), nn.ReLU(),  # (B, c1, H, W)
            nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(),  # (B, c2, H, W)
            nn.MaxPool2d(2),  # (B, c2, H/2, W/2)
            nn.Flatten(),  # (B, c2 * H/2 * W/2)
        )
        self.head = nn.Linear(c2 * (height // 2) * (width // 2), n_classes)

    def forward(self, x):  # x: (B, 1, H, W)
        return self.head(self.features(x))  # (B, n_classes)
