"""Variational autoencoder on 8x8 digits: pytorch/examples ``vae/main.py`` scaled down.

Source: https://github.com/pytorch/examples/tree/main/vae (main.py). Kept: the
fully connected encoder (fc1 -> ReLU -> fc21 = mu, fc22 = logvar) and decoder (fc3 ->
ReLU -> fc4 -> sigmoid), the reparameterization mu + eps * exp(logvar / 2), the loss
BCE(recon, x, reduction="sum") + KLD summed over the batch, inputs in [0, 1]
(``ToTensor``), Adam(lr=1e-3), batch 128. Scaled: 784-400-20 -> 64-64-8 (``width``
multiplies the hidden layer), 10 MNIST epochs -> 600 steps (75 epochs of the 1077
training digits).

Seams: the model returns one packed tensor ``cat([recon, mu, logvar], 1)`` of shape
(B, 64 + 2 * 8), so every harness probe sees a plain tensor output; the dataset's
target ``y`` is the image itself (as charlm's windows), so the loss seam keeps its
``(output, y)`` signature and unpacks the output into the script's
``loss_function(recon_x, x, mu, logvar)``.

Randomness: in training, eps comes from torch's global RNG as in the script (the
harness seeds it, as it does for dropout). In eval mode eps comes from a fresh seed-0
generator (common random numbers): the test loss stays the sampled ELBO the script
reports (not the z = mu shortcut it dropped in pytorch/examples#419), yet two
evaluations of one model agree exactly.

Metric (higher is better): minus the test loss per example (the negative ELBO, nats),
computed in eval mode. A fresh model scores -44.7.
Clean metric, seeds 0-4: mean -25.60 (range -25.77 .. -25.45); deterministic per seed;
About 1.3 s per run on one thread (not measured idle: 1.5-2.8x the CPU time of a digits
run measured side by side on a loaded shared machine).
"""
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from recipebench.harness.pipeline import Dataset, Pipeline, register_pipeline
from recipebench.harness.pipelines.common import digits

PIXELS, HIDDEN, LATENT = 64, 64, 8


@lru_cache(maxsize=1)
def digits_autoencode() -> Dataset:
    """Digits in [0, 1] (N, 1, 8, 8); the target of each image is the image itself."""
    x = digits().x / np.float32(16.0)
    return Dataset(x, x.copy())


class VAE(nn.Module):
    def __init__(self, hidden: int = HIDDEN, latent: int = LATENT):
        super().__init__()
        self.fc1, self.fc21, self.fc22 = nn.Linear(PIXELS, hidden), nn.Linear(hidden, latent), nn.Linear(hidden, latent)
        self.fc3, self.fc4 = nn.Linear(latent, hidden), nn.Linear(hidden, PIXELS)
        self.relu = nn.ReLU()

    def encode(self, x):  # x: (B, 64)
        h = self.relu(self.fc1(x))  # (B, hidden)
        return self.fc21(h), self.fc22(h)  # (B, latent) each

    def reparameterize(self, mu, logvar):
        if self.training:
            eps = torch.randn_like(mu)  # (B, latent)
        else:  # common random numbers: a deterministic, still sampled, test ELBO
            eps = torch.randn(mu.shape, generator=torch.Generator().manual_seed(0))  # (B, latent)
        return mu + eps * torch.exp(0.5 * logvar)

    def decode(self, z):  # z: (B, latent)
        return torch.sigmoid(self.fc4(self.relu(self.fc3(z))))  # (B, 64)

    def forward(self, x):  # x: (B, 1, 8, 8)
        mu, logvar = self.encode(x.reshape(len(x), PIXELS))  # (B, 1, 8, 8) -> (B, 64)
        recon = self.decode(self.reparameterize(mu, logvar))  # (B, 64)
        return torch.cat([recon, mu, logvar], dim=1)  # packed: (B, 64 + 2 * latent)


def unpack(output: torch.Tensor):
    latent = (output.shape[1] - PIXELS) // 2
    return output.split([PIXELS, latent, latent], dim=1)  # recon (B, 64), mu (B, z), logvar (B, z)


def elbo_loss(output: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The script's loss_function: BCE summed over pixels and batch + KL(q(z|x) || N(0, I))."""
    recon, mu, logvar = unpack(output)
    bce = F.binary_cross_entropy(recon, y.reshape(len(y), PIXELS), reduction="sum")  # (B, 64) vs (B, 1, 8, 8) -> (B, 64)
    kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return bce + kld


@torch.no_grad()
def neg_test_loss(model, x, y) -> float:
    """Minus the eval-mode loss per example (the script's "Test set loss")."""
    was = model.training
    model.eval()
    total = sum(float(elbo_loss(model(xb), yb)) for xb, yb in zip(x.split(512), y.split(512)))
    model.train(was)
    return -total / len(x)


@register_pipeline
def vae() -> Pipeline:
    return Pipeline(
        source="https://github.com/pytorch/examples/tree/main/vae (main.py; scaled: 64-64-8 on 8x8 digits, 600 steps)",
        name="vae",
        description="fully connected VAE on 8x8 digits in [0, 1], BCE(sum) + KL, Adam 1e-3, batch 128",
        build_model=lambda p: VAE(hidden=HIDDEN * p.width),
        load_data=digits_autoencode,
        n_classes=0,  # no classes: the target is the input
        task="generation",
        metric="neg_test_loss_per_example",
        capabilities=frozenset({"single_optimizer", "width"}),
        loss=elbo_loss,
        evaluate=neg_test_loss,
        steps=600,
        batch_size=128,
        lr=1e-3,
        partition="calibration",
    )
