"""Orientation-dependent task from real digit images: two digits side by side, the
label says whether the LEFT digit is the larger one. A horizontal flip swaps the
sides, so flip augmentation is correct only when the label is swapped with it."""
from functools import lru_cache

import numpy as np
import torch

from recipebench.harness.pipeline import Dataset, Pipeline, register_pipeline
from recipebench.harness.pipelines.common import SmallCNN, digits as load_digits

N_PAIRS = 3000


@lru_cache(maxsize=1)
def pairs() -> Dataset:
    d = load_digits()
    rng = np.random.default_rng(0)
    i, j = rng.integers(0, len(d.y), (2, 4 * N_PAIRS))
    keep = np.flatnonzero(d.y[i] != d.y[j])[:N_PAIRS]  # no ties
    i, j = i[keep], j[keep]
    x = np.concatenate([d.x[i], d.x[j]], axis=-1)  # (N, 1, 8, 16): left | right
    return Dataset(x, (d.y[i] > d.y[j]).astype(np.int64))


def flip_and_swap(x: torch.Tensor, y: torch.Tensor, gen: torch.Generator):
    """Flip half of the batch horizontally; the flipped rows' labels swap (1 - y)."""
    flip = torch.rand(len(y), generator=gen) < 0.5  # (B,)
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)  # (B, 1, 8, 16)
    return x, torch.where(flip, 1 - y, y)


@register_pipeline
def flip_pairs() -> Pipeline:
    return Pipeline(
        source='written for recipebench: an orientation-dependent task for flip augmentation (recipe §2 "augmentation")',
        name="flip_pairs",
        description="is the left digit larger? two digits side by side (8x16), flip augmentation with label swap",
        build_model=lambda p: SmallCNN(2, height=8, width=16, width_mult=p.width),
        load_data=pairs,
        n_classes=2,
        capabilities=frozenset({"classification", "normalization", "flip_augmentation", "width", "feature_layers",
                                "single_optimizer"}),
        augment=flip_and_swap,
        steps=200,
    )
