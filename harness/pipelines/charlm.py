"""Character-level autoregressive language model on text that ships with Python: the
docstrings of a fixed list of standard-library modules. A one-block causal
transformer predicts each next character; the causal mask is the ``attn_mask`` seam, and the metric is honest next-character
accuracy after each held-out window, which no future position can leak into."""
import importlib
import inspect
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from recipebench.harness.pipeline import Dataset, Pipeline, register_pipeline

MODULES = ("textwrap", "json", "collections", "argparse", "string", "random", "statistics", "fractions",
           "decimal", "functools", "itertools", "pathlib", "csv", "heapq", "bisect", "shutil", "logging")
CONTEXT = 24  # characters the model reads
VOCAB = [chr(c) for c in range(32, 127)] + ["\n"]  # printable ASCII; anything else maps to "?"
STRIDE = 8


def corpus() -> str:
    docs = []
    for name in MODULES:
        module = importlib.import_module(name)
        docs += [inspect.getdoc(obj) or "" for _, obj in sorted(vars(module).items()) if not _.startswith("_")]
    return "\n".join(d for d in dict.fromkeys(docs) if d)


@lru_cache(maxsize=1)
def windows() -> Dataset:
    """Windows of CONTEXT + 1 characters: the model reads the first CONTEXT, every
    position predicts the next one. x and y both hold the whole window (the target is
    the window shifted by one, taken inside the loss)."""
    index = {ch: i for i, ch in enumerate(VOCAB)}
    ids = np.array([index.get(ch, index["?"]) for ch in corpus()], dtype=np.int64)
    starts = np.arange(0, len(ids) - CONTEXT - 1, STRIDE)[:6000]
    x = np.stack([ids[s:s + CONTEXT + 1] for s in starts])  # (N, CONTEXT + 1)
    return Dataset(x, x.copy())


class TinyGPT(nn.Module):
    def __init__(self, mask_fn, vocab: int = len(VOCAB), d: int = 32):
        super().__init__()
        self.mask_fn = mask_fn
        self.tok, self.pos = nn.Embedding(vocab, d), nn.Embedding(CONTEXT, d)
        self.attn = nn.MultiheadAttention(d, num_heads=2, batch_first=True)
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))
        self.head = nn.Linear(d, vocab)

    def forward(self, window):  # window: (B, CONTEXT + 1) token ids
        idx = window[:, :-1]  # (B, T): the last character is only ever a target
        t = idx.shape[1]
        h = self.tok(idx) + self.pos(torch.arange(t))  # (B, T, d)
        a = self.norm1(h)
        h = h + self.attn(a, a, a, attn_mask=self.mask_fn(t), need_weights=False)[0]  # (B, T, d)
        h = h + self.mlp(self.norm2(h))
        return self.head(h)  # (B, T, V)


def next_char_loss(logits: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """Position t predicts character t + 1 of the window."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), window[:, 1:].reshape(-1))  # (B*T, V) vs (B*T,)


@torch.no_grad()
def next_char_accuracy(model, x, y) -> float:
    """Accuracy of the prediction after the last read character (x[:, -1] is never an input)."""
    was = model.training
    model.eval()
    correct = sum(int((model(xb)[:, -1].argmax(-1) == xb[:, -1]).sum()) for xb in x.split(256))
    model.train(was)
    return correct / len(x)


@register_pipeline
def charlm() -> Pipeline:
    return Pipeline(
        source='written for recipebench: a one-block minGPT-style char model (https://github.com/karpathy/minGPT)',
        name="charlm",
        description="next-character model on stdlib docstrings, one causal attention block, 24-char context",
        build_model=lambda p: TinyGPT(p.attn_mask, d=32 * p.width),
        load_data=windows,
        n_classes=len(VOCAB),
        task="language_model",
        metric="next_char_accuracy",
        capabilities=frozenset({"autoregressive", "causal_attention", "window_targets", "width", "single_optimizer"}),
        loss=next_char_loss,
        evaluate=next_char_accuracy,
        steps=150,
        lr=5e-3,
    )
