"""Keras' "Convolutional autoencoder for image denoising" (keras.io example by Santiago L.
Valdarrama, after the Keras blog's "Building Autoencoders in Keras") on the 8x8 digits.

Source: https://keras.io/examples/vision/autoencoder/ . Kept as written: pixels scaled
to [0, 1] (``preprocess``: / 255, here / 16); noisy copies made once,
``clip(x + 0.4 * N(0, 1), 0, 1)`` (``noise``; here drawn once with a fixed NumPy seed,
for the training, validation and test images alike); the model Conv2D(32, 3, relu,
same) -> MaxPooling2D(2, same) -> Conv2D(32, 3, relu, same) -> MaxPooling2D(2, same) ->
Conv2DTranspose(32, 3, strides 2, relu, same) x 2 -> Conv2D(1, 3, sigmoid, same), with
Keras' default init (Glorot-uniform kernels, zero biases); ``binary_crossentropy``
(the mean over pixels and batch); Adam at lr 1e-3; batch 128 with shuffling, the last
partial batch kept; and the script's two ``fit`` calls on one model and optimizer:
first clean -> clean (50 epochs), then noisy -> clean (100 epochs). Here one loader
plays both: its first third of the epochs feeds clean inputs, the rest noisy ones
(``epoch_start`` tells it the epoch); the target is always the clean image.
Scaled down: 28x28 MNIST -> 8x8 digits, 32 -> 16 channels (``width`` multiplies them),
150 epochs of 60k images -> 270 steps = 30 epochs of the 1077 training digits (10
clean, 20 noisy; 9 batches per epoch).

Bends: (1) PyTorch's Adam eps is 1e-8 where Keras' is 1e-7 (the harness's ``adam``,
so optimizer controls apply; no measurable effect at these gradient sizes); (2)
ConvTranspose2d(k 3, stride 2, padding 1, output_padding 1) doubles the size as Keras'
"same" transposed conv does, with the kernel's taps placed symmetrically rather than
Keras' way (same shapes and parameter count). Not declared: "feature_layers" (the
model has no nn.Linear, and control_dropout hooks the last nn.Linear; it would crash).

Metric: minus the test MSE of the denoised noisy test digits against the clean ones,
the script's validation pair (noisy_test_data, test_data). Baselines: returning the
noisy input scores -0.0828, the mean training digit -0.0738, a fresh model -0.179.
Clean metric, seeds 0-4: mean -0.0520 (range -0.0549 .. -0.0485); deterministic per
seed. One thread: about 2.9 s CPU per run (digits: 0.8 s in the same process, on a
loaded 2-core machine; 8 channels would take 1.7 s but score only -0.063 .. -0.068).

Split: calibration. It is the zoo's first reconstruction task (the VAE is a
generative ELBO): detectors that read reconstruction runs must be designed against it.
"""
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from recipebench.harness.pipeline import Dataset, Pipeline, adam, register_pipeline
from recipebench.harness.pipelines.common import digits

NOISE_FACTOR = 0.4
CHANNELS = 16
CLEAN_SHARE = 1 / 3  # the first fit's share of the script's 50 + 100 epochs


@lru_cache(maxsize=1)
def noisy_digits() -> Dataset:
    """x: the noisy digit (N, 1, 8, 8) in [0, 1], drawn once; y: the clean digit."""
    clean = digits().x / np.float32(16.0)  # preprocess: pixels in [0, 1]
    noise = np.random.default_rng(0).normal(0.0, 1.0, size=clean.shape)
    noisy = np.clip(clean + NOISE_FACTOR * noise, 0.0, 1.0).astype(np.float32)  # the script's noise()
    return Dataset(noisy, clean.copy())


class ConvAutoencoder(nn.Module):
    def __init__(self, channels: int = CHANNELS):
        super().__init__()
        c = channels
        self.encoder = nn.Sequential(
            nn.Conv2d(1, c, 3, padding=1), nn.ReLU(),  # (B, c, 8, 8)
            nn.MaxPool2d(2),  # (B, c, 4, 4)
            nn.Conv2d(c, c, 3, padding=1), nn.ReLU(),  # (B, c, 4, 4)
            nn.MaxPool2d(2),  # (B, c, 2, 2)
        )
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(c, c, 3, stride=2, padding=1, output_padding=1), nn.ReLU(),  # (B, c, 4, 4)
            nn.ConvTranspose2d(c, c, 3, stride=2, padding=1, output_padding=1), nn.ReLU(),  # (B, c, 8, 8)
            nn.Conv2d(c, 1, 3, padding=1), nn.Sigmoid(),  # (B, 1, 8, 8)
        )
        for m in self.modules():  # Keras defaults: glorot_uniform kernels, zero biases
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x):  # x: (B, 1, 8, 8)
        return self.decoder(self.encoder(x))  # (B, 1, 8, 8) in (0, 1)


class TwoFits(torch.utils.data.Dataset):
    """The script's two fits as one dataset: (clean, clean) pairs in the first fit's
    epochs, (noisy, clean) after; indexed by a whole batch of indices."""

    def __init__(self, noisy: torch.Tensor, clean: torch.Tensor, clean_epochs: int):
        self.noisy, self.clean, self.clean_epochs, self.epoch = noisy, clean, clean_epochs, 0

    def __len__(self) -> int:
        return len(self.clean)

    def __getitem__(self, idx):
        inputs = self.clean if self.epoch < self.clean_epochs else self.noisy
        return inputs[idx], self.clean[idx]


def two_fit_loader(p: Pipeline, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator):
    """model.fit(..., batch_size=128, shuffle=True) twice: shuffled each epoch, last
    partial batch kept, whole batches fetched by index."""
    from torch.utils.data import BatchSampler, DataLoader, RandomSampler

    per_epoch = -(-len(y) // p.batch_size)
    data = TwoFits(x, y, clean_epochs=round(CLEAN_SHARE * p.steps / per_epoch))
    batches = BatchSampler(RandomSampler(range(len(y)), generator=generator), p.batch_size, drop_last=False)
    private = torch.Generator().manual_seed(generator.initial_seed() + 1)
    return DataLoader(data, sampler=batches, batch_size=None, generator=private)


def tell_fit(loader, epoch: int) -> None:
    """Before each epoch: which of the two fits it belongs to."""
    if isinstance(getattr(loader, "dataset", None), TwoFits):
        loader.dataset.epoch = epoch


def binary_crossentropy(output: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy(output, y)  # mean over (B, 1, 8, 8)


@torch.no_grad()
def neg_reconstruction_mse(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Minus the mean squared error of the model's output on x against y, in eval mode."""
    was = model.training
    model.eval()
    se = sum(float(((model(xb) - yb) ** 2).sum()) for xb, yb in zip(x.split(512), y.split(512)))
    model.train(was)
    return -se / y.numel()


@register_pipeline
def conv_autoencoder() -> Pipeline:
    return Pipeline(
        source="https://keras.io/examples/vision/autoencoder/ (conv denoising autoencoder: Conv2D/MaxPool encoder, "
               "Conv2DTranspose decoder, sigmoid, binary_crossentropy, Adam, batch 128, clean fit then noisy fit; "
               "scaled to 8x8 digits, 16 channels, 270 steps)",
        name="conv_autoencoder",
        description="Keras conv denoising autoencoder on 8x8 digits: noise 0.4 clipped, BCE, Adam 1e-3, batch 128; "
                    "a clean->clean fit, then noisy->clean",
        build_model=lambda p: ConvAutoencoder(CHANNELS * p.width),
        load_data=noisy_digits,
        n_classes=0,  # no classes: the target is an image
        capabilities=frozenset({"reconstruction", "single_optimizer", "width"}),
        task="reconstruction",
        metric="neg_test_mse",
        loader=two_fit_loader,
        epoch_start=tell_fit,
        loss=binary_crossentropy,
        optimizer=adam,
        evaluate=neg_reconstruction_mse,
        steps=270,
        batch_size=128,
        lr=1e-3,
        partition="calibration",
    )
