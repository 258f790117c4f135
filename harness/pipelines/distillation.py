"""The PyTorch "Knowledge Distillation Tutorial"
(https://pytorch.org/tutorials/beginner/knowledge_distillation_tutorial.html) on the
8x8 digits: a larger teacher (``DeepNN``) trained first with cross-entropy, then a
smaller student (``LightNN``) trained by ``train_knowledge_distillation``.

Re-created as written: both nets are the tutorial's conv feature extractor followed by
a classifier ``Linear - ReLU - Dropout(0.1) - Linear``; inputs normalized with fixed
per-channel statistics (here the training split's); the teacher is trained with Adam
lr 1e-3 and cross-entropy for 10 epochs, then the student with Adam lr 1e-3 for 10
epochs on ``0.25 * soft_targets_loss + 0.75 * label_loss``, where the teacher runs in
eval mode under ``torch.no_grad()``, ``soft_targets = softmax(teacher_logits / T)``,
``soft_prob = log_softmax(student_logits / T)``, ``soft_targets_loss =
sum(soft_targets * (soft_targets.log() - soft_prob)) / batch * T**2`` (the KL
divergence, scaled by T^2 as Hinton et al. suggest) with T = 2, and ``label_loss``
the cross-entropy on the true labels. The loss is the ``step_loss`` seam (it sees the
batch: the teacher's logits on the same inputs); the label term is the ``loss`` seam.

Scaled down: channels / 4 (teacher convs 32-16 | pool | 16-8 | pool, classifier
32-128-10; student convs 4 | pool | 4 | pool, classifier 16-64-10; the tutorial's
128-64-64-32 and 16-16 on 32x32 CIFAR-10), batch 64 (tutorial 128), 10 epochs of
16 batches each for teacher and student.

The teacher is trained inside the harness once per process (:func:`trained_teacher`,
cached; seed 0, on this pipeline's own clean training split, under ``fork_rng`` so
that training it never moves the random state of the run that first asks for it),
as ``finetune`` pretrains its backbone; it is returned in eval mode (the tutorial's
``teacher.eval()``, called once before its loop).

Bends (what had to fit the API): (1) the API has no seam for a teacher: step_loss
calls :func:`trained_teacher` itself, and a bug that changes how the teacher is used
turns on a keyword switch of step_loss (``teacher_in_train_mode``), the convention of
the GAN bugs; the teacher is put back in eval mode after each use, because the
cached module is shared by every run in the process. (2) The teacher is fixed: a bug that
changes the training data (labels, split) changes the student's data, not the
teacher's, which was trained before (as a teacher downloaded or trained earlier
would be). Neither changes what the clean run computes.

Clean metric (student test accuracy), seeds 0-4: mean 0.753, range 0.708-0.803;
chance 0.10. The teacher scores 0.933; the same student trained on cross-entropy
alone scores mean 0.760 (0.708-0.811): at this scale distillation does not help the
student (the tutorial reports a gain of under 1 point on CIFAR-10). About 1.0 s CPU
per run (one torch thread), plus 0.8-4.5 s once per process for the teacher.
Held out (partition "test"): a kind of pipeline the detectors were never tuned on.
"""
from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn

from recipebench.harness.pipeline import Pipeline, register_pipeline
from recipebench.harness.pipelines.common import digits as load_digits

SOURCE = "https://pytorch.org/tutorials/beginner/knowledge_distillation_tutorial.html"
T = 2.0  # temperature
SOFT_TARGET_LOSS_WEIGHT, CE_LOSS_WEIGHT = 0.25, 0.75
EPOCHS, BATCH = 10, 64
TRAIN_BATCHES = 16  # len(train_loader): 1078 training digits // 64 (the harness's loader drops the last)


class DeepNN(nn.Module):
    """The tutorial's teacher, channels / 4."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, kernel_size=3, padding=1), nn.ReLU(),  # (B, 32, 8, 8)
            nn.Conv2d(32, 16, kernel_size=3, padding=1), nn.ReLU(),  # (B, 16, 8, 8)
            nn.MaxPool2d(kernel_size=2, stride=2),  # (B, 16, 4, 4)
            nn.Conv2d(16, 16, kernel_size=3, padding=1), nn.ReLU(),  # (B, 16, 4, 4)
            nn.Conv2d(16, 8, kernel_size=3, padding=1), nn.ReLU(),  # (B, 8, 4, 4)
            nn.MaxPool2d(kernel_size=2, stride=2),  # (B, 8, 2, 2)
        )
        self.classifier = nn.Sequential(nn.Linear(32, 128), nn.ReLU(), nn.Dropout(0.1), nn.Linear(128, num_classes))

    def forward(self, x):  # (B, 1, 8, 8)
        x = torch.flatten(self.features(x), 1)  # (B, 32)
        return self.classifier(x)  # (B, num_classes)


class LightNN(nn.Module):
    """The tutorial's student, channels / 4."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 4, kernel_size=3, padding=1), nn.ReLU(),  # (B, 4, 8, 8)
            nn.MaxPool2d(kernel_size=2, stride=2),  # (B, 4, 4, 4)
            nn.Conv2d(4, 4, kernel_size=3, padding=1), nn.ReLU(),  # (B, 4, 4, 4)
            nn.MaxPool2d(kernel_size=2, stride=2),  # (B, 4, 2, 2)
        )
        self.classifier = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Dropout(0.1), nn.Linear(64, num_classes))

    def forward(self, x):  # (B, 1, 8, 8)
        x = torch.flatten(self.features(x), 1)  # (B, 16)
        return self.classifier(x)  # (B, num_classes)


def teacher_pipeline() -> Pipeline:
    """The tutorial's ``train(nn_deep, train_loader, epochs=10, learning_rate=0.001)``."""
    return Pipeline(name="distillation_teacher", description="the teacher's own training",
                    build_model=lambda p: DeepNN(p.n_classes), load_data=load_digits, n_classes=10,
                    capabilities=frozenset({"classification", "normalization"}),
                    steps=EPOCHS * TRAIN_BATCHES, batch_size=BATCH, lr=1e-3)


@lru_cache(maxsize=1)
def trained_teacher() -> DeepNN:
    """The teacher, trained once per process (seed 0) on the clean training split, in
    eval mode. The run's random state is forked: training it consumes none of it."""
    from recipebench.harness.trace import batches, prepare, seed_everything, steps_per_epoch, train

    p = teacher_pipeline()
    prep = prepare(p)
    with torch.random.fork_rng(devices=[]):
        import numpy as np

        np_state = np.random.get_state()
        try:
            seed_everything(0)
            teacher = p.build_model(p)
            train(p, teacher, batches(p, prep, seed=0), p.steps, steps_per_epoch(p, prep))
        finally:
            np.random.set_state(np_state)
    for q in teacher.parameters():
        q.requires_grad_(False)
    return teacher.eval()  # the tutorial's teacher.eval() before the distillation loop


def knowledge_distillation_loss(p: Pipeline, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
                                teacher_in_train_mode: bool = False) -> torch.Tensor:
    """train_knowledge_distillation's loss on one batch. ``teacher_in_train_mode`` is
    the keyword switch a bug turns on (as a GAN's ``train_step`` takes its switches):
    the teacher's ``eval()`` forgotten, its dropout active while it gives the targets."""
    teacher = trained_teacher()
    if teacher_in_train_mode:
        teacher.train()
    try:
        with torch.no_grad():  # the teacher's weights do not change
            teacher_logits = teacher(x)  # (B, C)
    finally:
        teacher.eval()  # the cached teacher is shared by every run in the process
    student_logits = p.forward(model, x)  # (B, C)
    soft_targets = F.softmax(teacher_logits / T, dim=-1)  # (B, C)
    soft_prob = F.log_softmax(student_logits / T, dim=-1)  # (B, C)
    soft_targets_loss = torch.sum(soft_targets * (soft_targets.log() - soft_prob)) / soft_prob.size()[0] * (T**2)
    label_loss = p.loss(student_logits, y)
    return SOFT_TARGET_LOSS_WEIGHT * soft_targets_loss + CE_LOSS_WEIGHT * label_loss


def build_student(p: Pipeline) -> LightNN:
    trained_teacher()  # trained (once) before the student's run starts, its random state forked
    return LightNN(p.n_classes)


@register_pipeline
def distillation() -> Pipeline:
    return Pipeline(
        source=f"{SOURCE} (teacher DeepNN then student LightNN, T=2, 0.25 KL*T^2 + 0.75 CE, Adam 1e-3, 10 epochs); "
               "scaled: 8x8 digits, channels / 4, batch 64; the teacher is trained in the harness once per process",
        name="distillation",
        description="knowledge distillation on digits: a CNN teacher trained first, a 4-channel CNN student on "
                    "0.25 * KL(teacher/T || student/T) * T^2 + 0.75 * CE, teacher in eval mode under no_grad",
        build_model=build_student,
        load_data=load_digits,
        n_classes=10,
        capabilities=frozenset({"classification", "distillation", "normalization", "feature_layers",
                                "dropout_batchnorm", "single_optimizer"}),
        task="classification",
        metric="accuracy",
        step_loss=knowledge_distillation_loss,
        steps=EPOCHS * TRAIN_BATCHES,
        batch_size=BATCH,
        lr=1e-3,
        partition="test",
    )
