"""pytorch/examples ``word_language_model/main.py`` at character level on the standard
library's docstrings (:func:`recipebench.harness.pipelines.charlm.corpus`).

As in the script: the token stream is ``batchify``-ed into ``batch_size`` columns and
trained in order in truncated-BPTT chunks of ``bptt`` steps (``get_batch``); the LSTM's
hidden state is carried from chunk to chunk (``ctx.state``), detached before each step
(``repackage_hidden``) and re-initialised to zeros at the start of each epoch;
embedding -> LSTM (time-first) -> linear decoder, uniform(-0.1, 0.1) init;
plain SGD at lr 20 with ``clip_grad_norm_(0.25)``; the learning rate divided by 4
whenever the validation loss does not improve, as ``ReduceLROnPlateau(factor=0.25,
patience=0)`` stepped per epoch. ``evaluate`` is the script's: the held-out stream
batchified into 10 columns, read chunk after chunk with the hidden state carried.
Scaled down: characters instead of words; emsize 64, one layer of nhid 128 (the
script's 2 x 200 stays near the unigram loss in this budget); bptt 20; 200 steps over an
11,000-character training stream (about 7 epochs: the LR is divided by 4 once in 4 of
5 seeds);
no dropout (``--dropout 0``). The text: every 5th run of 240 characters of the
docstrings, dealt out in turn to train, train, test, train, val, train, test (the
script reads three separate files), so each split covers every module.

Metric: minus the test loss (mean next-character cross-entropy, nats).
Clean metric, seeds 0-4: mean -2.481 (-2.521 to -2.457; the unigram loss is 3.3).
One thread: about 1.1x the CPU time of ``charlm`` (2.5-2.7 s vs 2.2-2.6 s on a loaded
2-core machine).
"""
from functools import lru_cache, partial

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, SequentialSampler

from recipebench.harness.pipeline import Dataset, Pipeline, Scheduled, params_of, register_pipeline
from recipebench.harness.pipelines.charlm import corpus
from recipebench.harness.pipelines.nanogpt import block_split, vocab

BPTT, EVAL_BATCH = 20, 10
SEGMENT = 12  # windows in a 240-character run of text
PATTERN = "t----t----e----t----v----t----e----"  # every 5th run, in turn train, train, test, train, val, ...


@lru_cache(maxsize=1)
def windows() -> Dataset:
    """The text as consecutive BPTT-long pieces: x the characters, y the next ones."""
    stoi = {ch: i for i, ch in enumerate(vocab())}
    ids = np.array([stoi[ch] for ch in corpus()], dtype=np.int64)
    n = (len(ids) - 1) // BPTT
    return Dataset(ids[:n * BPTT].reshape(n, BPTT), ids[1:n * BPTT + 1].reshape(n, BPTT))  # (N, T) each


def batchify(stream: torch.Tensor, bsz: int) -> torch.Tensor:
    """The stream cut into ``bsz`` contiguous pieces, row b = the script's column b."""
    n = stream.numel() // bsz
    return stream.reshape(-1)[:n * bsz].view(bsz, n)  # (B, L)


class Chunks(torch.utils.data.Dataset):
    """get_batch(i): the i-th BPTT chunk of every column, (B, T) inputs and targets."""

    def __init__(self, x, y, bsz):
        self.data, self.target = batchify(x, bsz), batchify(y, bsz)  # (B, L) each

    def __len__(self):
        return -(-self.data.shape[1] // BPTT)

    def __getitem__(self, i):
        return self.data[:, i * BPTT:(i + 1) * BPTT], self.target[:, i * BPTT:(i + 1) * BPTT]  # (B, T)


def chunk_loader(p, x, y, generator):
    chunks = Chunks(x, y, min(p.batch_size, len(x)))
    return DataLoader(chunks, sampler=SequentialSampler(chunks), batch_size=None)


class RNNModel(nn.Module):
    def __init__(self, ntoken: int, ninp: int = 64, nhid: int = 128, nlayers: int = 1):
        super().__init__()
        self.encoder, self.rnn = nn.Embedding(ntoken, ninp), nn.LSTM(ninp, nhid, nlayers)
        self.decoder = nn.Linear(nhid, ntoken)
        nn.init.uniform_(self.encoder.weight, -0.1, 0.1)
        nn.init.uniform_(self.decoder.weight, -0.1, 0.1)
        nn.init.zeros_(self.decoder.bias)

    def forward(self, x, state: dict | None = None):  # x: (B, T) ids; state["hidden"]: (h, c) or None (zeros)
        emb = self.encoder(x).transpose(0, 1)  # (T, B, E): the LSTM is time-first
        output, hidden = self.rnn(emb, None if state is None else state.get("hidden"))  # (T, B, H)
        if state is not None:
            state["hidden"] = hidden  # 2 x (layers, B, H)
        return self.decoder(output).transpose(0, 1)  # (B, T, V)


def repackage_hidden(h):
    return None if h is None else tuple(v.detach() for v in h)


def tbptt_step(pipeline, model, opt, x, y, ctx, *, carry_hidden=True):
    """One TBPTT chunk: the hidden state from the previous chunk, detached; zeros at
    each epoch's first chunk (``init_hidden``)."""
    if ctx.batch_idx == 0 or not carry_hidden:
        ctx.state["hidden"] = None
    ctx.state["hidden"] = repackage_hidden(ctx.state.get("hidden"))
    opt.zero_grad(set_to_none=True)
    loss = pipeline.loss(model(x, ctx.state), y)
    loss.backward()
    if pipeline.clip_norm is not None:
        pipeline.clip(model, pipeline.clip_norm)
    opt.step()
    return loss


def flat_cross_entropy(output, y):
    return F.cross_entropy(output.reshape(-1, output.shape[-1]), y.reshape(-1))  # (B*T, V) vs (B*T,)


def sgd(named_params, lr: float):
    return torch.optim.SGD(params_of(named_params), lr=lr)


def divide_by_4_on_plateau(opt, steps: int, steps_per_epoch: int) -> Scheduled:
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=0.25, patience=0)
    return Scheduled(plateau, interval="epoch", monitor="val_loss")


@torch.no_grad()
def minus_stream_loss(model, x, y) -> float:
    """The script's evaluate(): columns of the held-out stream read in order, the hidden
    state carried across chunks; minus the mean cross-entropy per character."""
    was = model.training
    model.eval()
    chunks, state, total = Chunks(x, y, min(EVAL_BATCH, len(x))), {"hidden": None}, 0.0
    for i in range(len(chunks)):
        data, target = chunks[i]  # (B, T)
        output = model(data, state)  # (B, T, V)
        total += float(F.cross_entropy(output.reshape(-1, output.shape[-1]), target.reshape(-1), reduction="sum"))
    model.train(was)
    return -total / chunks.target.numel()


@register_pipeline
def lstm_lm() -> Pipeline:
    return Pipeline(
        source="https://github.com/pytorch/examples/tree/main/word_language_model (main.py; scaled down: "
               "characters of stdlib docstrings, 1x128 LSTM, bptt 20, 200 steps, no dropout)",
        name="lstm_lm",
        description="word_language_model at char level: batchified TBPTT LSTM, SGD lr 20, clip 0.25, LR/4 on plateau",
        build_model=lambda p: RNNModel(p.n_classes),
        load_data=windows,
        split=partial(block_split, block=SEGMENT, pattern=PATTERN),
        n_classes=len(vocab()),
        task="language_model",
        metric="minus_test_loss",
        capabilities=frozenset({"autoregressive", "tbptt", "plateau_scheduler", "lr_schedule", "grad_clipping"}),
        loader=chunk_loader,
        loss=flat_cross_entropy,
        optimizer=sgd,
        scheduler=divide_by_4_on_plateau,
        train_step=tbptt_step,
        evaluate=minus_stream_loss,
        steps=200,
        batch_size=20,
        lr=20.0,
        clip_norm=0.25,
        partition="calibration",
    )
