"""Data sources of the population: scikit-learn's bundled sets and sequences the draw
generates itself, and each task's trivial baseline computed from the splits.

Every source returns a :class:`~recipebench.harness.pipeline.Dataset` (float32 inputs;
int64 class labels, float32 targets or multi-hot rows, int64 token windows); the
generated ones are a function of the draw's seed only.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from recipebench.harness.pipeline import Dataset, Splits

PAD = 0  # padding id of token rows (the EmbeddingBag collate of harness/pipelines/text_classification.py)
CONTEXT = 16  # tokens a language model reads; windows hold CONTEXT + 1
BAG_WIDTH = 24  # longest document of the generated bags


@lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.images.astype(np.float32), d.target.astype(np.int64)  # (N, 8, 8) in 0..16


@lru_cache(maxsize=8)
def _sklearn(name: str) -> tuple[np.ndarray, np.ndarray]:
    import sklearn.datasets as ds

    d = getattr(ds, f"load_{name}")()
    return d.data.astype(np.float32), d.target


def markov_text(seed: int, vocab: int) -> Dataset:
    """Token windows cut from a sequence the draw samples from its own sparse Markov
    chain (each token has three likely successors): x and y are the same windows."""
    rng = np.random.default_rng([seed, 7])
    successors = np.stack([rng.choice(vocab, 3, replace=False) for _ in range(vocab)])  # (V, 3)
    probs = rng.dirichlet([4.0, 2.0, 1.0], size=vocab)  # (V, 3)
    n = 24000
    seq = np.empty(n, dtype=np.int64)
    seq[0] = 0
    u = rng.random(n)
    for t in range(1, n):
        row = probs[seq[t - 1]]
        seq[t] = successors[seq[t - 1], min(int(np.searchsorted(np.cumsum(row), u[t])), 2)]
    starts = np.arange(0, n - CONTEXT - 1, 8)
    x = np.stack([seq[s:s + CONTEXT + 1] for s in starts])  # (N, CONTEXT + 1)
    return Dataset(x, x.copy())


def topic_bags(seed: int, vocab: int = 300, topics: int = 4, n: int = 1200) -> Dataset:
    """Documents as rows of token ids padded with 0: each drawn from its topic's own
    sparse word distribution (ids 1..vocab-1); y the topic."""
    rng = np.random.default_rng([seed, 11])
    dists = rng.dirichlet(np.full(vocab - 1, 0.05), size=topics)  # (K, V - 1)
    background = rng.dirichlet(np.full(vocab - 1, 1.0))
    y = rng.integers(0, topics, n)
    x = np.zeros((n, BAG_WIDTH), dtype=np.int64)
    for i in range(n):
        length = int(rng.integers(4, BAG_WIDTH + 1))
        mix = 0.5 * dists[y[i]] + 0.5 * background
        x[i, :length] = 1 + rng.choice(vocab - 1, length, p=mix)
    return Dataset(x, y.astype(np.int64))


def load(source: str, inputs: str, seed: int, scale_in_data: bool, denoising: float = 0.0) -> Dataset:
    """The dataset of one draw; ``scale_in_data``: digits pixels / 16 (inputs not
    standardized by the harness)."""
    if source.startswith("digit"):
        images, labels = _digits()
        if scale_in_data or source == "digits_pixels":
            images = images / np.float32(16.0)
        x = {"image": images[:, None], "rows": images, "vector": images.reshape(len(images), -1)}[inputs]
        if source in ("digits_image", "digits_flat", "digits_rows"):
            return Dataset(np.ascontiguousarray(x), labels)
        if source == "digit_vs_rest":
            positive = int(np.random.default_rng([seed, 3]).integers(0, 10))  # the draw's own rare class
            return Dataset(np.ascontiguousarray(x), (labels == positive).astype(np.int64))
        if source == "digit_attributes":  # even, >= 5, has a closed loop, prime
            attrs = np.stack([labels % 2 == 0, labels >= 5, np.isin(labels, [0, 6, 8, 9]), np.isin(labels, [2, 3, 5, 7])],
                             axis=1)
            return Dataset(np.ascontiguousarray(x), attrs.astype(np.float32))
        if source == "digits_pixels":
            clean = x.astype(np.float32)
            if not denoising:
                return Dataset(clean, clean.copy())
            noise = np.random.default_rng([seed, 5]).normal(0.0, denoising, clean.shape)
            return Dataset(np.clip(clean + noise, 0.0, 1.0).astype(np.float32), clean)
    if source == "markov_text":
        return markov_text(seed, vocab=int(np.random.default_rng([seed, 9]).integers(12, 25)))
    if source == "topic_bags":
        return topic_bags(seed)
    if source == "wine_alcohol":
        x, _ = _sklearn("wine")
        return Dataset(np.ascontiguousarray(x[:, 1:]), x[:, 0].astype(np.float32))
    x, y = _sklearn(source)
    if source == "diabetes":
        return Dataset(x, y.astype(np.float32))
    return Dataset(x, y.astype(np.int64))


def minmax_on_train(splits: Splits) -> Splits:
    """scikit-learn's ``MinMaxScaler`` fitted on the training split, applied to every split."""
    lo, hi = splits.train.x.min(axis=0), splits.train.x.max(axis=0)
    span = np.where(hi - lo > 0, hi - lo, 1.0)
    scale = lambda d: Dataset(((d.x - lo) / span).astype(np.float32), d.y)  # noqa: E731
    return Splits(scale(splits.train), scale(splits.val), scale(splits.test))


def standardize_targets(splits: Splits) -> Splits:
    """A target scaler (``StandardScaler`` on y) fitted on the training split."""
    mean, std = float(splits.train.y.mean()), float(splits.train.y.std()) or 1.0
    scale = lambda d: Dataset(d.x, ((d.y - mean) / std).astype(np.float32))  # noqa: E731
    return Splits(scale(splits.train), scale(splits.val), scale(splits.test))


def r2(pred: np.ndarray, y: np.ndarray) -> float:
    y, pred = np.asarray(y, float).reshape(len(y), -1), np.asarray(pred, float).reshape(len(y), -1)
    total = ((y - y.mean(axis=0)) ** 2).sum()
    return float(1 - ((pred - y) ** 2).sum() / total) if total > 0 else 0.0


def baseline(task: str, splits: Splits) -> float:
    """The trivial predictor's score on the test split, fitted on the training split:
    the majority class (classification, binary), each label's majority (multi-label),
    the training mean (regression, reconstruction: R^2), the most frequent token
    (language model: accuracy of the last position)."""
    tr, te = splits.train, splits.test
    if task in ("classification", "binary"):
        return float(np.mean(te.y == np.bincount(tr.y).argmax()))
    if task == "multilabel":
        return float(np.mean((te.y > 0.5) == (tr.y.mean(axis=0) > 0.5)))
    if task == "language_model":
        return float(np.mean(te.x[:, -1] == np.bincount(tr.x.ravel()).argmax()))
    mean = tr.y.reshape(len(tr.y), -1).mean(axis=0)
    return r2(np.broadcast_to(mean, te.y.reshape(len(te.y), -1).shape), te.y)
