"""The training loop as ordinary PyTorch scripts write it: the optimizer steps when the
script says so (gradient accumulation across loader batches), batches of any structure,
a loss that sees the whole batch, preparation fitted on the training split. Each test
compares the harness with the plain-torch loop it must reproduce, or with what a
detector must never do on legitimate code (raise)."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from recipebench.detectors.base import DETECTORS, Outcome
from recipebench.harness.pipeline import (Dataset, Pipeline, Scheduled, Splits, decay_groups, get_pipeline,
                                          stratified_split)
from recipebench.harness.probes import carried_gradient_fraction, total_grad_norm
from recipebench.harness.runner import check_one
from recipebench.harness.subject import Subject
from recipebench.harness.trace import batches, prepare, record, seed_everything, steps_per_epoch

ACCUMULATE, CLIP = 4, 0.5
CATALOG = "recipebench.detectors."  # the project's own detectors (not ones other tests register)


def accumulating_step(p, model, opt, x, y, ctx):
    """Hugging Face Trainer's inner loop: the loss divided by the accumulation steps,
    clip + step + zero_grad on every 4th batch and at the epoch's end."""
    loss = p.step_loss(p, model, x, y) / ACCUMULATE
    loss.backward()
    if ctx.accumulation_boundary(ACCUMULATE):
        p.clip(model, p.clip_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return loss * ACCUMULATE


def linear_warmup_decay(opt, steps, spe):
    """get_linear_schedule_with_warmup over the optimizer steps the script will take."""
    updates = math.ceil(spe / ACCUMULATE) * math.ceil(steps / spe)
    warm = max(1, updates // 10)
    return Scheduled(torch.optim.lr_scheduler.LambdaLR(
        opt, lambda k: k / warm if k < warm else max(0.0, (updates - k) / max(1, updates - warm))))


def adamw(named, lr):
    return torch.optim.AdamW(decay_groups(named, 0.01), lr=lr)


def accumulating_digits() -> Pipeline:
    return get_pipeline("digits").replace(train_step=accumulating_step, scheduler=linear_warmup_decay,
                                          optimizer=adamw, clip_norm=CLIP, batch_size=8, steps=200)


def reference_lrs(p: Pipeline, seed: int) -> list[float]:
    """The same script written as a plain PyTorch loop: the LR each optimizer step used."""
    prep = prepare(p)
    seed_everything(seed)
    model = p.build_model(p)
    opt = p.optimizer(list(model.named_parameters()), p.lr)
    spe = steps_per_epoch(p, prep)
    sched = p.scheduler(opt, p.steps, spe).scheduler
    used, data = [], batches(p, prep, seed)
    for i in range(p.steps):
        x, y = next(data)
        (F.cross_entropy(model(x), y) / ACCUMULATE).backward()
        if (i % spe + 1) % ACCUMULATE == 0 or i % spe + 1 == spe:
            nn.utils.clip_grad_norm_(model.parameters(), CLIP)
            used.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
    return used


def test_under_accumulation_every_optimizer_step_is_recorded_with_its_update_and_clipped_gradient():
    p = accumulating_digits()
    trace = record(p, 0)
    assert trace.error is None and trace.silent, trace.warnings  # no "scheduler.step() before optimizer.step()"
    spe = steps_per_epoch(p, prepare(p))  # 134 batches of 8: an epoch ends on a short window of 2
    boundaries = [c for c in range(200) if (c % spe + 1) % ACCUMULATE == 0 or c % spe + 1 == spe]
    assert len(trace.loss) == 200 and trace.step_calls == boundaries and len(trace.lr) == len(boundaries) == 50
    updates = np.sum([u for u in trace.update_norm.values()], axis=0)  # (sampled optimizer steps,)
    lr = np.asarray(trace.lr)[trace.sample_steps]  # the warmup starts at LR 0: no update there
    assert len(updates) == len(trace.sample_steps) > 10 and ((updates > 0) == (lr > 0)).all() and (lr > 0).sum() > 10
    norms = total_grad_norm(trace)
    assert len(norms) == 50 and norms.max() <= CLIP * (1 + 1e-4) and norms.min() > 0.5 * CLIP


def test_a_scheduler_stepped_with_its_optimizer_under_accumulation_matches_the_plain_loop():
    p = accumulating_digits()
    assert np.allclose(record(p, 0).lr, reference_lrs(p, 0), rtol=0, atol=1e-12)


def test_the_kept_gradient_of_a_micro_batch_is_not_read_as_a_missing_zero_grad():
    """Probes of consecutive steps reason in optimizer steps: the gradient a micro-batch
    legitimately keeps for the next is no carried gradient; one that survives an
    optimizer step is."""
    p = accumulating_digits()
    assert carried_gradient_fraction(Subject(p, 0)) == 0.0

    def never_zeroed(q, model, opt, x, y, ctx):
        (q.step_loss(q, model, x, y) / ACCUMULATE).backward()
        if ctx.accumulation_boundary(ACCUMULATE):
            opt.step()
        return torch.zeros(())

    assert carried_gradient_fraction(Subject(p.replace(train_step=never_zeroed), 0)) > 0.5


class BagClassifier(nn.Module):
    """PyTorch's text-classification tutorial model: EmbeddingBag over token lists with offsets."""

    def __init__(self, vocab: int, classes: int):
        super().__init__()
        self.embedding = nn.EmbeddingBag(vocab, 16, padding_idx=0)  # pad tokens leave the bag
        self.fc = nn.Linear(16, classes)

    def forward(self, text, offsets):
        return self.fc(self.embedding(text, offsets))  # (B, classes)


def bag_loader(p, x, y, generator):
    """Rows of quantized pixels as 'token lists' of varying length, collated into one
    flat tensor with offsets, as the tutorial's collate_batch does."""
    def collate(rows):
        tokens = [r[0][r[0] > 0] for r in rows]  # drop pad (0) tokens: variable-length lists
        offsets = torch.tensor([0] + [len(t) for t in tokens[:-1]]).cumsum(0)
        return (torch.cat(tokens), offsets), torch.stack([r[1] for r in rows])
    data = torch.utils.data.TensorDataset(x, y)
    return DataLoader(data, batch_size=p.batch_size, shuffle=True, drop_last=True, collate_fn=collate,
                      generator=torch.Generator().manual_seed(generator.initial_seed()))


def bag_digits() -> Pipeline:
    def tokens(splits: Splits) -> Splits:  # the vocabulary of (position, intensity) tokens seen in training
        def raw(d):  # (N, 64) raw tokens; 0 for dark pixels
            level = np.floor(d.x.reshape(len(d.x), -1) / 4).astype(int)  # 0..4
            return np.where(level > 0, np.arange(64) * 5 + level, 0)
        vocab = {t: i + 1 for i, t in enumerate(np.unique(raw(splits.train)[raw(splits.train) > 0]))}
        encode = lambda d: Dataset(np.vectorize(lambda t: vocab.get(t, 0))(raw(d)), d.y)  # noqa: E731  0 = pad/unknown
        return Splits(encode(splits.train), encode(splits.val), encode(splits.test))

    def forward(model, x):  # a loader batch's (tokens, offsets), or rows of a stored split (N, 64)
        if isinstance(x, tuple):
            return model(*x)
        return model(x.reshape(-1), torch.arange(len(x)) * x.shape[1])  # fixed-length bags

    def evaluate(model, x, y):
        with torch.no_grad():
            return float((forward(model, x).argmax(-1) == y).float().mean())

    base = get_pipeline("digits")
    return Pipeline(name="bag_digits", description="EmbeddingBag over pixel tokens", n_classes=10,
                    build_model=lambda p: BagClassifier(64 * 5 + 1, 10), load_data=lambda: base.load_data(),
                    capabilities=frozenset({"classification", "structured_batch", "embedding_bag", "split_fitting"}),
                    split=stratified_split, prepare_splits=tokens, loader=bag_loader, evaluate=evaluate,
                    forward=forward, steps=150, lr=0.03)


def dict_digits() -> Pipeline:
    """Hugging Face style batches: a dict of tensors, the labels under "labels"."""
    def loader(p, x, y, generator):
        data = [{"pixel_values": a, "labels": b} for a, b in zip(x, y)]
        return DataLoader(data, batch_size=p.batch_size, shuffle=True, drop_last=True,
                          generator=torch.Generator().manual_seed(generator.initial_seed()))

    def unpack(batch):
        return {k: v for k, v in batch.items() if k != "labels"}, batch["labels"]

    class KeywordCNN(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, pixel_values):
            return self.inner(pixel_values)

    base = get_pipeline("digits")
    return base.replace(name="dict_digits", loader=loader, unpack=unpack,
                        build_model=lambda p: KeywordCNN(base.build_model(p)),
                        capabilities=base.capabilities | {"structured_batch"}, steps=40)


@pytest.mark.parametrize("make", [bag_digits, dict_digits], ids=["embedding_bag_offsets", "dict_batch"])
def test_every_detector_reads_a_structured_batch_or_is_not_applicable(make):
    """Legitimate code the detectors were not written for: a verdict or not_applicable
    for every recipe detector, never an error cell."""
    p = make()
    subject = Subject(p, 0, reference=None)
    assert subject.trace.error is None, subject.trace.error
    assert subject.trace.metric > 0.5  # it trains: chance is 0.1
    outcomes = {}
    for name, cls in DETECTORS.items():
        if cls.peer or not cls.in_default_run or cls.needs_reference or not cls.__module__.startswith(CATALOG):
            continue  # other tests register throw-away detectors in the same process
        verdict = check_one(name, subject, p, subject.trace, timeout=120)
        outcomes[name] = verdict.outcome
        assert verdict.outcome not in (Outcome.ERROR, Outcome.TIMEOUT), (name, verdict.evidence)
    assert Outcome.PASSED in outcomes.values()


def test_inputs_are_recorded_where_the_model_receives_them():
    """The forward pre-hook sees the keyword input of a dict batch ("visualize just
    before the net")."""
    trace = record(dict_digits(), 0)
    assert trace.error is None and len(trace.input_mean) == 8 and len(trace.input_mean[0]) == 1


def test_preparation_is_fitted_on_the_training_split_and_the_true_metric_keeps_clean_labels():
    """A label encoder fitted per split (the bug prepare_splits makes writable) misleads
    the pipeline's own evaluation, not the harness's true metric."""
    base = get_pipeline("digits").replace(steps=60)

    def relabel_each_split(splits: Splits) -> Splits:  # LabelEncoder.fit_transform on every split separately
        def enc(d, shift):
            return Dataset(d.x, (d.y + shift) % 10)
        return Splits(enc(splits.train, 0), enc(splits.val, 3), enc(splits.test, 3))

    buggy = Subject(base.replace(prepare_splits=relabel_each_split), 0, clean=base)
    assert buggy.trace.error is None
    assert buggy.trace.metric > 0.6 and buggy.trace.reported_metric < 0.3


def test_integer_regression_targets_are_split_without_stratifying():
    x = np.random.default_rng(0).normal(size=(300, 3)).astype(np.float32)
    y = np.arange(300) % 97  # integer targets, most values 3 times or fewer
    splits = stratified_split(Dataset(x, y))
    assert len(splits.train.y) + len(splits.val.y) + len(splits.test.y) == 300


def test_plateau_on_a_validation_metric_with_mode_max():
    seen = []

    class Spy(torch.optim.lr_scheduler.ReduceLROnPlateau):
        def step(self, metrics):
            seen.append(metrics)
            super().step(metrics)

    p = get_pipeline("digits").replace(steps=40, scheduler=lambda opt, steps, spe: Scheduled(
        Spy(opt, mode="max"), interval="epoch", monitor="val_metric"))
    trace = record(p, 0)
    assert trace.error is None and len(seen) == 2 and all(0.3 < m <= 1 for m in seen)


class LoggingSGD(torch.optim.SGD):
    """A user's optimizer subclass whose ``step`` calls ``super().step()``."""

    def step(self, closure=None):
        return super().step(closure)


def test_an_optimizer_subclass_is_recorded_once_per_step():
    """torch wraps ``step`` of every optimizer class it instantiates with the step hooks:
    once SGD itself has been instantiated, a subclass calling ``super().step()`` runs them
    twice. The trace and the schedulers still count one step."""
    torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)  # SGD.step is now wrapped too
    p = get_pipeline("digits").replace(
        steps=20, optimizer=lambda named, lr: LoggingSGD([q for _, q in named], lr=lr), lr=0.1,
        scheduler=lambda opt, steps, spe: Scheduled(torch.optim.lr_scheduler.StepLR(opt, 5, gamma=0.5)))
    trace = record(p, 0)
    assert trace.error is None and trace.step_calls == list(range(20))
    assert trace.lr == [0.1 * 0.5 ** (k // 5) for k in range(20)]
