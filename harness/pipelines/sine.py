"""pytorch/examples ``time_sequence_prediction``: ``generate_sine_wave.py`` + ``train.py``.

As in the scripts: N = 100 sine waves ``sin((t + shift) / T)`` with T = 20 and a random
integer shift in [-4T, 4T) per wave (numpy seed 2, as the generator); the model reads
a wave one value at a time through two stacked ``nn.LSTMCell``s (51 units) and a
``Linear`` and predicts the next value (targets pre-shifted by one); MSE loss; full
batch LBFGS(lr=0.8) with a closure in the train step. Scaled down: waves of L = 20
values instead of 1000, 20 LBFGS steps of at most 4 iterations instead of 15 of 20
(80 iterations in all: LBFGS carries its state across steps), float32 instead of
float64; 80 training waves, 10 val, 10 test (the script: 97 train, 3 test).

Metric: minus the test MSE of the one-step-ahead predictions.
Clean metric, seeds 0-4: mean -0.00037 (-0.00048 to -0.00031); repeating the last
value scores -0.0014, predicting 0 scores -0.45. One thread: 1.1-1.4x the CPU time of
``charlm`` (2.7-3.2 s vs 2.2-2.6 s on a loaded 2-core machine).
"""
from functools import lru_cache

import numpy as np
import torch
from torch import nn

from recipebench.harness.pipeline import Dataset, Pipeline, Splits, params_of, register_pipeline

PERIOD, LENGTH, N_WAVES, HIDDEN = 20, 20, 100, 51


@lru_cache(maxsize=1)
def sine_waves() -> Dataset:
    rng = np.random.RandomState(2)
    t = np.arange(LENGTH) + rng.randint(-4 * PERIOD, 4 * PERIOD, N_WAVES).reshape(N_WAVES, 1)  # (N, L)
    data = np.sin(t / PERIOD).astype(np.float32)[:, :, None]  # (N, L, 1)
    return Dataset(data[:, :-1], data[:, 1:])  # inputs (N, L-1, 1), next values (N, L-1, 1)


def first_waves_held_out(data: Dataset) -> Splits:
    """The script tests on the first waves and trains on the rest; the val split sits between."""
    pick = lambda s: Dataset(data.x[s], data.y[s])  # noqa: E731
    return Splits(pick(slice(20, None)), pick(slice(10, 20)), pick(slice(0, 10)))


class Sequence(nn.Module):
    def __init__(self, hidden: int = HIDDEN):
        super().__init__()
        self.lstm1, self.lstm2 = nn.LSTMCell(1, hidden), nn.LSTMCell(hidden, hidden)
        self.linear = nn.Linear(hidden, 1)
        self.hidden = hidden

    def forward(self, x):  # x: (B, T, 1)
        h1 = c1 = h2 = c2 = x.new_zeros(x.shape[0], self.hidden)  # (B, H)
        outputs = []
        for x_t in x.unbind(1):  # (B, 1) per time step
            h1, c1 = self.lstm1(x_t, (h1, c1))
            h2, c2 = self.lstm2(h1, (h2, c2))
            outputs.append(self.linear(h2))  # (B, 1)
        return torch.stack(outputs, dim=1)  # (B, T, 1)


def mse(output, y):
    return nn.functional.mse_loss(output, y)


def lbfgs(named_params, lr: float):
    return torch.optim.LBFGS(params_of(named_params), lr=lr, max_iter=4)  # the script: max_iter=20 (default)


def lbfgs_step(pipeline, model, opt, x, y, ctx):
    """optimizer.step(closure): LBFGS re-evaluates the loss several times per step."""
    def closure():
        opt.zero_grad()
        loss = pipeline.loss(model(x), y)
        loss.backward()
        return loss

    return opt.step(closure)  # the loss at the start of the step


@torch.no_grad()
def minus_mse(model, x, y) -> float:
    was = model.training
    model.eval()
    loss = float(nn.functional.mse_loss(model(x), y))
    model.train(was)
    return -loss


@register_pipeline
def sine_lstm() -> Pipeline:
    return Pipeline(
        source="https://github.com/pytorch/examples/tree/main/time_sequence_prediction (train.py + "
               "generate_sine_wave.py; scaled down: waves of 20 values, 20 LBFGS steps x 4 iterations, float32)",
        name="sine_lstm",
        description="next value of shifted sine waves: two LSTMCells + Linear, MSE, full-batch LBFGS(lr=0.8)",
        build_model=lambda p: Sequence(),
        load_data=sine_waves,
        split=first_waves_held_out,
        n_classes=1,
        task="sequence_regression",
        metric="minus_test_mse",
        capabilities=frozenset({"autoregressive"}),
        loss=mse,
        optimizer=lbfgs,
        train_step=lbfgs_step,
        evaluate=minus_mse,
        steps=20,
        batch_size=80,
        lr=0.8,
        partition="test",
    )
