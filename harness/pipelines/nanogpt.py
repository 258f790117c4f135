"""nanoGPT at toy scale: karpathy/nanoGPT ``train.py`` + ``model.py`` on the standard
library's docstrings (:func:`recipebench.harness.pipelines.charlm.corpus`) with a
character vocabulary built from the text (as ``data/shakespeare_char/prepare.py``).

As in nanoGPT: pre-shifted targets (``x = ids[i:i+T]``, ``y = ids[i+1:i+T+1]``, so the
loss is plain cross-entropy over (B*T, V)); pre-LayerNorm blocks of causal
self-attention (fused ``c_attn``, mask from the ``attn_mask`` seam) and a GELU MLP;
a final LayerNorm and an ``lm_head`` tied to the token embedding; N(0, 0.02) init with
``c_proj`` scaled by 1/sqrt(2 n_layer); AdamW with ``configure_optimizers``' groups
(decay 0.1 on dim >= 2 only), betas (0.9, 0.95); ``get_lr(it)`` (linear warmup, cosine
to lr/10) as a ``LambdaLR`` stepped per step with max_iters = the training length;
``clip_grad_norm_(1.0)``. Scaled down: 2 layers, 2 heads, n_embd 48, block 32, batch
32, 150 iterations, warmup 10% of them, lr 3e-3, no dropout (train.py's default).
The data are non-overlapping windows; runs of 10 are dealt out in text order to
train / val / test (:func:`block_split`; nanoGPT splits its text 90/10), and the
loader shuffles the training windows where nanoGPT samples random offsets, so the
150 iterations are about 5 epochs.

Metric: next-character accuracy on the test windows (every 4th position, each read
from the window cut after it: :func:`next_char_accuracy`).
Clean metric, seeds 0-4: mean 0.284 (0.267-0.296); the most frequent character
scores 0.18. One thread: 1.5-1.9x the CPU time of ``charlm`` (3.8-5.0 s vs 2.2-2.6 s
on a loaded 2-core machine).
"""
import math
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from recipebench.harness.pipeline import Dataset, Pipeline, Scheduled, Splits, decay_groups, register_pipeline
from recipebench.harness.pipelines.charlm import corpus

BLOCK = 32  # block_size: characters the model reads
WARMUP = 0.1  # warmup_iters / max_iters


@lru_cache(maxsize=1)
def vocab() -> list:
    return sorted(set(corpus()))


@lru_cache(maxsize=1)
def windows() -> Dataset:
    """The text cut into consecutive windows: x the block, y the block shifted by one."""
    stoi = {ch: i for i, ch in enumerate(vocab())}
    ids = np.array([stoi[ch] for ch in corpus()], dtype=np.int64)
    n = (len(ids) - 1) // BLOCK
    return Dataset(ids[:n * BLOCK].reshape(n, BLOCK), ids[1:n * BLOCK + 1].reshape(n, BLOCK))  # (N, T) each


def block_split(data: Dataset, block: int = 10, pattern: str = "t-t-e-t-t-v-t-t-e-t-") -> Splits:
    """Runs of ``block`` windows dealt out in text order by ``pattern`` (t: train, v: val,
    e: test, -: unused): each split is contiguous text from every module."""
    roles = np.array([pattern[(i // block) % len(pattern)] for i in range(len(data.y))])
    pick = lambda r: Dataset(data.x[roles == r], data.y[roles == r])  # noqa: E731
    return Splits(pick("t"), pick("v"), pick("e"))


class CausalSelfAttention(nn.Module):
    def __init__(self, d: int, n_head: int, mask_fn):
        super().__init__()
        self.c_attn, self.c_proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.n_head, self.mask_fn = n_head, mask_fn

    def forward(self, x):  # x: (B, T, C)
        b, t, c = x.shape
        q, k, v = self.c_attn(x).split(c, dim=2)  # 3 x (B, T, C)
        q, k, v = (z.view(b, t, self.n_head, c // self.n_head).transpose(1, 2) for z in (q, k, v))  # (B, nh, T, hs)
        mask = self.mask_fn(t)  # (T, T), True where attention is forbidden
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=None if mask is None else ~mask)  # (B, nh, T, hs)
        return self.c_proj(y.transpose(1, 2).contiguous().view(b, t, c))  # (B, T, C)


class Block(nn.Module):
    def __init__(self, d: int, n_head: int, mask_fn):
        super().__init__()
        self.ln_1, self.attn, self.ln_2 = nn.LayerNorm(d), CausalSelfAttention(d, n_head, mask_fn), nn.LayerNorm(d)
        self.mlp = nn.ModuleDict(dict(c_fc=nn.Linear(d, 4 * d), c_proj=nn.Linear(4 * d, d)))

    def forward(self, x):  # (B, T, C)
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp.c_proj(F.gelu(self.mlp.c_fc(self.ln_2(x))))  # (B, T, 4C) inside


class GPT(nn.Module):
    def __init__(self, mask_fn, vocab_size: int, d: int = 48, n_layer: int = 2, n_head: int = 2):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab_size, d), nn.Embedding(BLOCK, d)
        self.h = nn.ModuleList(Block(d, n_head, mask_fn) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(d)
        self.lm_head = nn.Linear(d, vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # weight tying
        for name, q in self.named_parameters():
            if q.dim() >= 2:  # Linear and Embedding weights
                std = 0.02 / math.sqrt(2 * n_layer) if name.endswith("c_proj.weight") else 0.02
                nn.init.normal_(q, 0.0, std)
            elif name.endswith("bias"):
                nn.init.zeros_(q)

    def forward(self, idx):  # idx: (B, T) token ids
        t = idx.shape[1]
        x = self.wte(idx) + self.wpe(torch.arange(t))  # (B, T, C)
        for block in self.h:
            x = block(x)
        return self.lm_head(self.ln_f(x))  # (B, T, V)


def flat_cross_entropy(logits, y):
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))  # (B*T, V) vs (B*T,)


def adamw(named_params, lr: float):
    """configure_optimizers: weight decay on matrices and embeddings only."""
    return torch.optim.AdamW(decay_groups(named_params, 0.1), lr=lr, betas=(0.9, 0.95))


def warmup_cosine(opt, steps: int, steps_per_epoch: int) -> Scheduled:
    """get_lr(it) as a multiplier of the base LR: linear warmup, cosine decay to 1/10."""
    warmup, min_ratio = max(1, int(WARMUP * steps)), 0.1

    def get_lr(it: int) -> float:
        if it < warmup:
            return (it + 1) / (warmup + 1)
        if it > steps:
            return min_ratio
        coeff = 0.5 * (1.0 + math.cos(math.pi * (it - warmup) / max(1, steps - warmup)))
        return min_ratio + coeff * (1.0 - min_ratio)

    return Scheduled(torch.optim.lr_scheduler.LambdaLR(opt, get_lr), interval="step")


@torch.no_grad()
def next_char_accuracy(model, x, y) -> float:
    """Accuracy at every 4th position t, each predicted from the window cut after t: no
    character after t is ever an input, so a model that peeks ahead gains nothing."""
    was = model.training
    model.eval()
    cuts = range(3, x.shape[1], 4)
    correct = sum(int((model(x[:, :t + 1])[:, -1].argmax(-1) == y[:, t]).sum()) for t in cuts)  # (N, t+1) -> (N, V)
    model.train(was)
    return correct / (len(x) * len(cuts))


@register_pipeline
def nanogpt_chars() -> Pipeline:
    return Pipeline(
        source="https://github.com/karpathy/nanoGPT (train.py + model.py; scaled down: 2 layers x 48 dims, "
               "block 32, 150 iters, char vocab of stdlib docstrings instead of Shakespeare)",
        name="nanogpt_chars",
        description="nanoGPT char model on stdlib docstrings: tied GPT, AdamW groups, warmup-cosine LambdaLR, clip 1.0",
        build_model=lambda p: GPT(p.attn_mask, p.n_classes),
        load_data=windows,
        split=block_split,
        n_classes=len(vocab()),
        task="language_model",
        metric="next_char_accuracy",
        capabilities=frozenset({"autoregressive", "causal_attention", "warmup_scheduler", "grad_clipping",
                                "lr_schedule", "single_optimizer"}),
        loss=flat_cross_entropy,
        optimizer=adamw,
        scheduler=warmup_cosine,
        evaluate=next_char_accuracy,
        steps=150,
        batch_size=32,
        lr=3e-3,
        clip_norm=1.0,
        partition="test",
    )
