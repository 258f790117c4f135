"""DCGAN on 8x8 digits: pytorch/examples ``dcgan/main.py`` scaled down.

Source: https://github.com/pytorch/examples/tree/main/dcgan (main.py). Kept: a
BN-ReLU generator with a Tanh output, a LeakyReLU(0.2)-BN discriminator with a Sigmoid
output and ``BCELoss``, bias-free layers, ``weights_init`` (weights N(0, 0.02), BN
weights N(1, 0.02), BN biases 0), images scaled to [-1, 1] (the script's
``Normalize(0.5, 0.5)``), batch 64, one Adam(lr=2e-4, betas=(0.5, 0.999)) per network,
25 epochs (400 steps over the 1077 training images), and the script's step: D on real
(label 1) and on ``fake.detach()`` (label 0), then G through D(fake) against the real
label. Scaled: 64x64 RGB -> sklearn's 8x8 digits, nz 100 -> 16, and each strided
(transposed) convolution -> a Linear layer of the same role (G 16-128-256-64, D
64-256-128-1): on one CPU thread a conv version took ~2x the time per step and, at lr
2e-4, more steps than the 2 s budget (FID about -12 after 360 steps).

One module holds ``.generator`` and ``.discriminator``; its ``forward`` is D (the
harness's hooks see every image D judges) and every label is 1 ("real"), so
``loss(model(x), y)`` is D's loss on real images. The ``optimizer`` seam splits the
named parameters by prefix into (optD, optG); the train step is :func:`gan_step`,
whose keyword switches are the bugs of ``bugs/gan.py``. Noise: a generator carried in
``ctx.state``, seeded from the run's seed (torch's global RNG is not drawn from).

Metric (higher is better): minus the Frechet distance, in 64-d pixel space, between
``len(x)`` samples of G (eval mode, fixed noise from a seed-0 generator) and the
images ``x`` (labels unused); tr sqrtm(s1 s2) via symmetric eigendecompositions (no
``sqrtm`` warnings on the rank-deficient digit covariance). On the test split, 360
real training images score -0.64 (the noise floor), a fresh G -45.8.
Clean metric, seeds 0-4: mean -4.03 (range -4.66 .. -3.40); deterministic per seed;
About 2 s per run on one thread (not measured idle: 3.8-4.7x the CPU time of a digits
run measured side by side on a loaded shared machine).
"""
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from recipebench.harness.pipeline import Dataset, Pipeline, register_pipeline
from recipebench.harness.pipelines.common import digits

NZ, H = 16, 128


@lru_cache(maxsize=1)
def digits_pm1() -> Dataset:
    """Digits scaled to [-1, 1] (N, 1, 8, 8); every label 1: each image is real."""
    d = digits()
    return Dataset(d.x / np.float32(8.0) - np.float32(1.0), np.ones(len(d.x), dtype=np.float32))


def weights_init(m: nn.Module) -> None:
    """The script's init, its conv layers being Linear here."""
    if isinstance(m, nn.Linear):
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif isinstance(m, nn.BatchNorm1d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


class DCGAN(nn.Module):
    def __init__(self, h: int = H):
        super().__init__()
        self.generator = nn.Sequential(  # input noise (B, NZ)
            nn.Linear(NZ, h, bias=False), nn.BatchNorm1d(h), nn.ReLU(),  # (B, h)
            nn.Linear(h, 2 * h, bias=False), nn.BatchNorm1d(2 * h), nn.ReLU(),  # (B, 2h)
            nn.Linear(2 * h, 64, bias=False), nn.Tanh(),  # (B, 64)
            nn.Unflatten(1, (1, 8, 8)),  # (B, 64) -> (B, 1, 8, 8)
        )
        self.discriminator = nn.Sequential(  # input images (B, 1, 8, 8)
            nn.Flatten(),  # (B, 1, 8, 8) -> (B, 64)
            nn.Linear(64, 2 * h, bias=False), nn.LeakyReLU(0.2),  # (B, 2h)
            nn.Linear(2 * h, h, bias=False), nn.BatchNorm1d(h), nn.LeakyReLU(0.2),  # (B, h)
            nn.Linear(h, 1, bias=False), nn.Sigmoid(),  # (B, 1)
        )
        self.apply(weights_init)

    def forward(self, x):  # x: (B, 1, 8, 8) images -> D's probability that each is real
        return self.discriminator(x).reshape(-1)  # (B, 1) -> (B,)


def bce(prob: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The script's ``nn.BCELoss()`` on D's probabilities."""
    return F.binary_cross_entropy(prob, target)


def adam_pair(named_params, lr: float):
    """(optD, optG): one Adam per network, as the script, split by parameter name."""
    def adam(prefix):
        return torch.optim.Adam([q for n, q in named_params if n.startswith(prefix)], lr=lr, betas=(0.5, 0.999))
    return adam("discriminator."), adam("generator.")


def gan_step(pipeline, model, opt, x, y, ctx, *, detach_generator_loss=False, swap_labels=False):
    """The script's two updates. ``y`` holds the real label (1) of each image.
    ``detach_generator_loss``: G's loss through ``fake.detach()`` (G gets no gradient);
    ``swap_labels``: real and fake labels swapped in D's step only."""
    opt_d, opt_g = opt
    if "noise" not in ctx.state:  # a private stream seeded from the run's seed
        ctx.state["noise"] = torch.Generator().manual_seed(torch.initial_seed() + 1)
    real_label, fake_label = y, torch.zeros_like(y)
    d_real, d_fake = (fake_label, real_label) if swap_labels else (real_label, fake_label)
    # (1) update D: maximize log D(x) + log(1 - D(G(z)))
    opt_d.zero_grad(set_to_none=True)
    err_d_real = pipeline.loss(model(x), d_real)
    err_d_real.backward()
    noise = torch.randn(len(x), NZ, generator=ctx.state["noise"])  # (B, NZ)
    fake = model.generator(noise)  # (B, 1, 8, 8)
    err_d_fake = pipeline.loss(model(fake.detach()), d_fake)
    err_d_fake.backward()
    opt_d.step()
    # (2) update G: maximize log D(G(z)), fake images labelled real
    opt_g.zero_grad(set_to_none=True)
    err_g = pipeline.loss(model(fake.detach() if detach_generator_loss else fake), real_label)
    err_g.backward()
    opt_g.step()
    return (err_d_real + err_d_fake + err_g).detach()


def _trace_sqrt_product(s1: np.ndarray, s2: np.ndarray) -> float:
    """tr(sqrtm(s1 @ s2)) for covariance matrices, via symmetric eigendecompositions
    (the eigenvalues of s1 s2 are those of r s2 r with r = s1^(1/2))."""
    w, v = np.linalg.eigh(s1)
    r = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    return float(np.sqrt(np.clip(np.linalg.eigvalsh(r @ s2 @ r), 0, None)).sum())


@torch.no_grad()
def neg_frechet_distance(model, x, y) -> float:
    """Minus the Frechet distance between G's samples from fixed noise and ``x``."""
    was = model.training
    model.eval()
    noise = torch.randn(len(x), NZ, generator=torch.Generator().manual_seed(0))  # (N, NZ)
    fake = model.generator(noise).reshape(len(x), -1).double().numpy()  # (N, 1, 8, 8) -> (N, 64)
    model.train(was)
    real = x.reshape(len(x), -1).double().numpy()  # (N, 1, 8, 8) -> (N, 64)
    s1, s2 = np.cov(fake, rowvar=False), np.cov(real, rowvar=False)
    fid = ((fake.mean(0) - real.mean(0)) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * _trace_sqrt_product(s1, s2)
    return -float(fid)


@register_pipeline
def dcgan() -> Pipeline:
    return Pipeline(
        source="https://github.com/pytorch/examples/tree/main/dcgan (main.py; scaled: 8x8 digits, nz 16, "
               "Linear layers for the strided convolutions, 400 steps = 25 epochs)",
        name="dcgan",
        description="DCGAN recipe on 8x8 digits in [-1, 1]: BN-ReLU-Tanh G, LeakyReLU-BN-Sigmoid D, BCE, two Adams",
        build_model=lambda p: DCGAN(),
        load_data=digits_pm1,
        n_classes=2,  # D's two outcomes, real and fake
        task="generation",
        metric="neg_frechet_distance",
        capabilities=frozenset({"gan"}),
        loss=bce,
        optimizer=adam_pair,
        train_step=gan_step,
        evaluate=neg_frechet_distance,
        steps=400,
        batch_size=64,
        lr=2e-4,
        partition="test",
    )
