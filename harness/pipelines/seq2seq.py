"""PyTorch's tutorial "NLP From Scratch: Translation with a Sequence to Sequence Network
and Attention" (current, batched version) at toy scale: number words to digits.

Source: https://pytorch.org/tutorials/intermediate/seq2seq_translation_tutorial.html
(pytorch/tutorials ``intermediate_source/seq2seq_translation_tutorial.py``). Kept as
written: ``EncoderRNN`` (Embedding -> Dropout(0.1) -> GRU, batch_first) and the plain
``DecoderRNN`` (Embedding -> ReLU -> GRU -> Linear, first hidden state = the encoder's
last hidden state, ``log_softmax`` over the vocabulary); ``SOS_token = 0``,
``EOS_token = 1``, every sentence ends in EOS and is zero-padded to ``MAX_LENGTH``
(so the padding is token 0 and, as in the tutorial, counted by the loss);
``nn.NLLLoss`` over ``(B*T, V)``; two Adams, ``encoder_optimizer`` and
``decoder_optimizer``, at the tutorial's lr 0.001, both zeroed and stepped every batch;
a ``RandomSampler`` DataLoader of batch 32 (last partial batch kept); teacher forcing
on every training step (the tutorial's ``train_epoch`` always passes
``target_tensor``); evaluation by greedy decoding, each step's argmax fed back.

Data (generated, no download): the numbers 0-999 written in English words ("three
hundred forty two", a 32-word source vocabulary) -> their digits ("3 4 2"), 1000
pairs, split 60/20/20 at random (fixed seed): the test numbers are never seen in
training. Scaled down: hidden 128 -> 64 (``width`` multiplies it), MAX_LENGTH 10 -> 6,
80 epochs of ~11k pairs -> 300 steps (16 epochs of the 600 training pairs). The
tutorial defines the plain DecoderRNN and then trains its AttnDecoderRNN; the plain one
is re-created here (it trains within budget; the attention decoder is left out).

Seams. The tutorial's decoder loop feeds ``target_tensor[:, i]`` after step i; here
the same decoder input, the target shifted right behind SOS (``shift_right``), is
built by ``step_loss`` (teacher forcing, the seam made for it) and the model takes
``(source, decoder_input)``; the plain decoder's GRU then runs over the whole decoder
input in one call, which is the tutorial's step-by-step loop computed at once (the
same GRU recurrence). ``model(source)`` alone decodes greedily for MAX_LENGTH steps,
as the tutorial's ``decoder(encoder_outputs, encoder_hidden)`` without a target.
Bends: none in the computation. Two optimizers, as written, so "single_optimizer" is
not declared (optimizer controls do not apply); the trace's LR is the encoder
optimizer's (both are the same).

Metric: token accuracy of greedy decoding on the test split, over each target's
digits and its EOS (the padding after EOS is not scored; the decoded sentence ends at
its own first EOS, as the tutorial's ``evaluate`` stops there). Trivial baseline: the
most frequent training token at each position ("4 4 0 EOS") scores 0.292; a fresh
model 0.00-0.09. Clean metric, seeds 0-4: mean 0.764 (range 0.717-0.824);
deterministic per seed. One thread: about 2.7 s CPU per run (digits: 0.8 s in the same
process, on a loaded 2-core machine).

Split: test (held out). It is the zoo's first sequence-to-sequence pipeline, a kind
of training (teacher forcing, greedy decoding) no detector threshold has seen.
"""
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from recipebench.harness.pipeline import Dataset, Pipeline, params_of, register_pipeline

SOS_token, EOS_token = 0, 1
MAX_LENGTH = 6
HIDDEN = 64
ONES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
        "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"]
TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
SOURCE_WORDS = ONES + TENS[2:] + ["hundred"]
N_SOURCE, N_TARGET = 2 + len(SOURCE_WORDS), 2 + 10  # SOS, EOS, then words / digits


def in_words(n: int) -> list[str]:
    """0 <= n < 1000 in English words: 342 -> ['three', 'hundred', 'forty', 'two']."""
    hundreds, rest = divmod(n, 100)
    words = [ONES[hundreds], "hundred"] if hundreds else []
    if rest or not words:
        words += [ONES[rest]] if rest < 20 else [TENS[rest // 10]] + ([ONES[rest % 10]] if rest % 10 else [])
    return words


def padded(ids: list[int]) -> list[int]:
    """The tutorial's get_dataloader row: the indexes, EOS, then zeros up to MAX_LENGTH."""
    ids = ids + [EOS_token]
    return ids + [0] * (MAX_LENGTH - len(ids))


@lru_cache(maxsize=1)
def number_pairs() -> Dataset:
    """Source word ids (N, MAX_LENGTH) and target digit ids (N, MAX_LENGTH), int64."""
    index = {w: 2 + i for i, w in enumerate(SOURCE_WORDS)}
    numbers = np.random.default_rng(0).permutation(1000)
    src = [padded([index[w] for w in in_words(int(n))]) for n in numbers]
    tgt = [padded([2 + int(d) for d in str(int(n))]) for n in numbers]
    return Dataset(np.array(src, dtype=np.int64), np.array(tgt, dtype=np.int64))


class EncoderRNN(nn.Module):
    def __init__(self, input_size: int, hidden_size: int, dropout_p: float = 0.1):
        super().__init__()
        self.embedding = nn.Embedding(input_size, hidden_size)
        self.gru = nn.GRU(hidden_size, hidden_size, batch_first=True)
        self.dropout = nn.Dropout(dropout_p)

    def forward(self, source):  # (B, S) token ids
        embedded = self.dropout(self.embedding(source))  # (B, S, H)
        return self.gru(embedded)  # outputs (B, S, H), hidden (1, B, H)


class DecoderRNN(nn.Module):
    def __init__(self, hidden_size: int, output_size: int):
        super().__init__()
        self.embedding = nn.Embedding(output_size, hidden_size)
        self.gru = nn.GRU(hidden_size, hidden_size, batch_first=True)
        self.out = nn.Linear(hidden_size, output_size)

    def forward_step(self, tokens, hidden):  # tokens (B, t), hidden (1, B, H)
        output, hidden = self.gru(F.relu(self.embedding(tokens)), hidden)  # (B, t, H), (1, B, H)
        return self.out(output), hidden  # (B, t, V)

    def forward(self, encoder_outputs, encoder_hidden, decoder_input=None):
        if decoder_input is not None:  # teacher forcing: every step's input is given
            logits, _ = self.forward_step(decoder_input, encoder_hidden)  # (B, T, V)
        else:  # greedy: each step's argmax is the next input
            token = torch.full((len(encoder_outputs), 1), SOS_token, dtype=torch.long)  # (B, 1)
            hidden, steps = encoder_hidden, []
            for _ in range(MAX_LENGTH):
                step, hidden = self.forward_step(token, hidden)  # (B, 1, V)
                steps.append(step)
                token = step.argmax(-1).detach()  # (B, 1)
            logits = torch.cat(steps, dim=1)  # (B, T, V)
        return F.log_softmax(logits, dim=-1)  # (B, T, V)


class Seq2Seq(nn.Module):
    """The tutorial's encoder and decoder called in sequence, as its train_epoch does."""

    def __init__(self, hidden_size: int = HIDDEN):
        super().__init__()
        self.encoder = EncoderRNN(N_SOURCE, hidden_size)
        self.decoder = DecoderRNN(hidden_size, N_TARGET)

    def forward(self, source, decoder_input=None):  # source (B, S); decoder_input (B, T) or None
        encoder_outputs, encoder_hidden = self.encoder(source)  # (B, S, H), (1, B, H)
        return self.decoder(encoder_outputs, encoder_hidden, decoder_input)  # (B, T, V) log-probs


def shift_right(target: torch.Tensor) -> torch.Tensor:
    """The decoder's input under teacher forcing: SOS, then the target without its last token."""
    sos = torch.full_like(target[:, :1], SOS_token)  # (B, 1)
    return torch.cat([sos, target[:, :-1]], dim=1)  # (B, T)


def nll_loss(log_probs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """criterion(decoder_outputs.view(-1, V), target_tensor.view(-1)) with nn.NLLLoss()."""
    return F.nll_loss(log_probs.reshape(-1, log_probs.shape[-1]), target.reshape(-1))  # (B*T, V) vs (B*T,)


def teacher_forced_loss(p: Pipeline, model: nn.Module, x, y) -> torch.Tensor:
    """One batch with teacher forcing: the decoder reads the target shifted right."""
    return p.loss(p.forward(model, (x, shift_right(y))), y)


def scored_positions(target: torch.Tensor) -> torch.Tensor:
    """True at each target token up to and including its EOS (the padding after it is not scored)."""
    is_eos = (target == EOS_token).long()  # (N, T)
    return (is_eos.cumsum(dim=1) - is_eos) == 0  # (N, T)


def token_accuracy(pred: torch.Tensor, y: torch.Tensor) -> float:
    """Share of the target's tokens up to its EOS that the decoded sentence matches; the
    decoded sentence ends at its own first EOS (the tutorial's evaluate stops there),
    later positions count as padding."""
    pred = pred.masked_fill(~scored_positions(pred), 0)  # (N, T)
    mask = scored_positions(y)
    return float(((pred == y) & mask).sum() / mask.sum())


@torch.no_grad()
def greedy_token_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Token accuracy of greedy decoding (no teacher forcing), as the tutorial evaluates."""
    was = model.training
    model.eval()
    pred = torch.cat([model(xb).argmax(-1) for xb in x.split(512)])  # (N, T)
    model.train(was)
    return token_accuracy(pred, y)


def encoder_decoder_adams(named_params, lr: float):
    """encoder_optimizer and decoder_optimizer: one Adam per module, as the tutorial's train()."""
    enc = [(n, q) for n, q in named_params if n.startswith("encoder.")]
    dec = [(n, q) for n, q in named_params if not n.startswith("encoder.")]
    return torch.optim.Adam(params_of(enc), lr=lr), torch.optim.Adam(params_of(dec), lr=lr)


def train_both(p: Pipeline, model: nn.Module, opt, x, y, ctx) -> torch.Tensor:
    """The tutorial's train_epoch body: zero both optimizers, loss, backward, step both."""
    optimizers = opt if isinstance(opt, (list, tuple)) else (opt,)
    for o in optimizers:
        o.zero_grad()
    loss = p.step_loss(p, model, x, y)
    loss.backward()
    for o in optimizers:
        o.step()
    return loss


def random_sampler_loader(p: Pipeline, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator):
    """DataLoader(TensorDataset, sampler=RandomSampler, batch_size=32), the last partial
    batch kept; whole batches fetched by index (one tensor index per batch)."""
    from torch.utils.data import BatchSampler, DataLoader, RandomSampler, TensorDataset

    batches = BatchSampler(RandomSampler(range(len(y)), generator=generator), p.batch_size, drop_last=False)
    private = torch.Generator().manual_seed(generator.initial_seed() + 1)
    return DataLoader(TensorDataset(x, y), sampler=batches, batch_size=None, generator=private)


@register_pipeline
def seq2seq_teacher_forcing() -> Pipeline:
    return Pipeline(
        source="https://pytorch.org/tutorials/intermediate/seq2seq_translation_tutorial.html (EncoderRNN + plain "
               "DecoderRNN, teacher forcing, NLLLoss, two Adams lr 1e-3, batch 32; scaled: hidden 64, MAX_LENGTH 6, "
               "300 steps on generated number-words -> digits pairs)",
        name="seq2seq_teacher_forcing",
        description="GRU encoder-decoder (PyTorch seq2seq tutorial), number words -> digits, teacher forcing, "
                    "NLLLoss, encoder and decoder Adams; greedy-decoding token accuracy",
        build_model=lambda p: Seq2Seq(HIDDEN * p.width),
        load_data=number_pairs,
        n_classes=N_TARGET,
        capabilities=frozenset({"seq2seq", "dropout_batchnorm", "feature_layers", "width"}),
        task="seq2seq",
        metric="greedy_token_accuracy",
        loader=random_sampler_loader,
        loss=nll_loss,
        step_loss=teacher_forced_loss,
        optimizer=encoder_decoder_adams,
        train_step=train_both,
        evaluate=greedy_token_accuracy,
        steps=300,
        batch_size=32,
        lr=1e-3,
        partition="test",
    )
