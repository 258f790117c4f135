"""The training API: what the harness records is what the optimizer used, real torch
schedulers and DataLoaders run as written, and the true metric does not trust the
pipeline's labels."""
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from recipebench.bugs.base import make_variant
from recipebench.harness.pipeline import Scheduled, get_pipeline, params_of
from recipebench.harness.probes import total_grad_norm
from recipebench.harness.trace import batches, prepare, record, train
from tests.conftest import subject


def test_clipping_after_step_is_recorded_as_unclipped():
    """Gradients are read in the optimizer's step pre-hook: clipping called after
    ``step()`` cannot make them look clipped."""
    clean, buggy = subject("digits").trace, subject("digits", "clip_after_step").trace
    clip = get_pipeline("digits").clip_norm
    assert total_grad_norm(clean).max() <= clip * (1 + 1e-4)
    assert total_grad_norm(buggy).max() > 2 * clip


def test_labels_corrupted_in_every_split_are_harmful_on_the_true_metric():
    """The pipeline's own evaluation agrees with its corrupted labels; the harness's
    true metric, on the clean test labels, shows the damage."""
    clean = subject("digits").trace
    buggy = subject("digits", "labels_transformed_every_split").trace
    assert buggy.reported_metric > 0.99  # every label became 0, and so did every prediction
    assert buggy.metric < 0.2 < clean.metric - 0.7
    assert clean.metric == clean.reported_metric


class RecordingSGD(torch.optim.SGD):
    """Logs the LR of its first param group inside ``step()``: what it really used."""

    def __init__(self, params, lr):
        super().__init__(params, lr=lr)
        self.used = []

    def step(self, closure=None):
        self.used.append(self.param_groups[0]["lr"])
        return super().step(closure)


def test_a_real_scheduler_sets_the_lr_the_optimizer_uses_and_the_trace_records_it():
    opts = []

    def optimizer(named, lr):
        opts.append(RecordingSGD(params_of(named), lr))
        return opts[-1]

    p = get_pipeline("digits").replace(
        optimizer=optimizer, lr=0.1, steps=60,
        scheduler=lambda opt, steps, spe: Scheduled(torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5),
                                                    interval="epoch"))
    trace = record(p, 0)
    assert trace.error is None and trace.lr == opts[-1].used
    spe = len(p.loader(p, prepare(p).x_train, prepare(p).y_train, torch.Generator()))
    expected = [0.1 * 0.5 ** (step // spe) for step in range(60)]  # halved after each epoch, never inside one
    assert np.allclose(trace.lr, expected)


def test_plateau_scheduler_is_given_the_monitored_value():
    seen = []

    class Spy(torch.optim.lr_scheduler.ReduceLROnPlateau):
        def step(self, metrics):
            seen.append(metrics)
            super().step(metrics)

    for monitor in ("val_loss", "train_loss"):
        seen.clear()
        p = get_pipeline("digits").replace(
            steps=40, scheduler=lambda opt, steps, spe: Scheduled(Spy(opt), interval="epoch", monitor=monitor))
        model = p.build_model(p)
        prep = prepare(p)
        losses = train(p, model, batches(p, prep, 0), p.steps, 18,
                       monitored={"val_loss": lambda: -1.0})  # a marker: only val_loss scheduling may return it
        assert len(seen) == 2  # two whole epochs of 18 steps
        if monitor == "val_loss":
            assert seen == [-1.0, -1.0]
        else:
            assert np.isclose(seen[0], np.mean(losses[:18])) and np.isclose(seen[1], np.mean(losses[18:36]))


class NoisyDigits(Dataset):
    """Per-example augmentation from numpy's global RNG, as many real Datasets do."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i] + torch.as_tensor(np.random.normal(0, 0.1, self.x[i].shape), dtype=torch.float32), self.y[i]


def seed_worker(worker_id):
    np.random.seed(torch.initial_seed() % 2**32)  # the fix from torch's randomness notes


def worker_loader(p, x, y, generator):
    return DataLoader(NoisyDigits(x, y), batch_size=p.batch_size, shuffle=True, num_workers=2, drop_last=True,
                      worker_init_fn=seed_worker, generator=torch.Generator().manual_seed(generator.initial_seed()))


def test_a_dataloader_with_two_workers_gives_the_same_batches_for_the_same_seed():
    p = get_pipeline("digits").replace(loader=worker_loader)
    prep = prepare(p)

    def first(seed, n=20):
        return [b for _, b in zip(range(n), batches(p, prep, seed))]  # 16 batches an epoch: two epochs

    a, b, c = first(0), first(0), first(1)
    assert all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b))
    assert not torch.equal(a[0][0], c[0][0])
    # on all-zero images a batch is pure noise: the two workers' first batches differ
    # (worker_init_fn seeds each worker's numpy from its own torch seed)
    zeros = p.replace(loader=lambda q, x, y, g: worker_loader(q, torch.zeros_like(x), y, g))
    noise = [xb for _, (xb, _) in zip(range(2), batches(zeros, prep, 0))]  # batch 0: worker 0, batch 1: worker 1
    assert noise[0].abs().sum() > 0 and not torch.allclose(noise[0], noise[1])


def test_a_bug_in_a_custom_loader_pipeline_is_a_substitution():
    """The default loader is a real DataLoader over the order seam: a bug that sorts the
    order reaches the net through it."""
    p = make_variant(get_pipeline("digits"), "unshuffled_sorted_data")
    prep = prepare(p)
    xb, yb = next(batches(p, prep, 0, augment=False))
    assert isinstance(p.loader(p, prep.x_train, prep.y_train, torch.Generator()), DataLoader)
    assert (yb == 0).all()


def test_an_evaluation_that_under_reports_shows_on_the_gap():
    """The reported-vs-true gap counts both ways: an evaluation that reports far less
    than the model achieves is as wrong as one that reports more."""
    from recipebench.harness.probes import reported_metric_gap
    from recipebench.harness.subject import Subject

    clean = get_pipeline("digits").replace(steps=60)
    under = clean.replace(evaluate=lambda model, x, y: 0.1)  # e.g. accuracy summed over the wrong axis
    s = Subject(under, 0, clean=clean)
    assert s.trace.metric > 0.6 and s.trace.reported_metric == 0.1
    assert reported_metric_gap(s) > 0.5 and reported_metric_gap(Subject(clean, 0)) == 0.0
