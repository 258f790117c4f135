"""Recipe §1-2 "become one with the data" / "visualize just before the net": checks on
exactly what goes into the network."""
import numpy as np

from recipebench.detectors.base import Detector, register_detector
from recipebench.harness.probes import augmentation_agreement, duplicate_fractions, label_batches, nn_disagreements


@register_detector
class InputStats(Detector):
    """Per-channel mean and std of the batches just before the net.

    A normalized pipeline promises inputs with mean ~0 and std ~1 per channel. On
    clean runs the recorded batch means are within 0.01 of 0 (batches of 64 x 64+
    values), so |mean| > 0.3 or std outside [0.5, 2] is far outside clean variation
    and still catches a mean off by a third of a std.
    """

    name = "input_stats"
    description = "net inputs of a normalized pipeline have per-channel mean ~0 and std ~1"
    recipe_step = "visualize just before the net"
    stage, kind, cost = "data", "passive", 1
    requires = frozenset({"normalization"})
    example_bug = "wrong_normalization_mean"
    MAX_ABS_MEAN, STD_BAND = 0.3, (0.5, 2.0)

    def check(self, s):
        mean = np.mean(s.trace.input_mean, axis=0)
        std = np.mean(s.trace.input_std, axis=0)
        worst = float(np.abs(mean).max())
        bad_std = bool(((std < self.STD_BAND[0]) | (std > self.STD_BAND[1])).any())
        return self.decide(worst > self.MAX_ABS_MEAN or bad_std, worst, steps=len(s.trace.input_mean),
                           channel_mean=mean.round(4).tolist(), channel_std=std.round(4).tolist())


@register_detector
class AugmentationConsistency(Detector):
    """Does the label follow the augmentation? A model trained on un-augmented batches
    scores the augmented held-out examples that the augmentation changed.

    On clean flip_pairs this agreement is ~0.75 against ~0.89 un-augmented accuracy
    (ratio ~0.85: the model has never seen mirrored digits). Labels that did not follow
    the transform push agreement below chance; the flag is agreement < 0.5 x the
    model's accuracy on un-augmented held-out data.
    """

    name = "augmentation_consistency"
    description = "a model trained without augmentation agrees with the augmented labels"
    recipe_step = "visualize just before the net"
    stage, kind, cost = "data", "active", 3
    requires = frozenset({"flip_augmentation"})
    example_bug = "flip_without_label_swap"
    RATIO = 0.5
    STEPS = 100

    def check(self, s):
        agreement, base = augmentation_agreement(s, self.STEPS)
        ratio = agreement / base if base else float("nan")
        return self.decide(ratio < self.RATIO, 1 - ratio, steps=self.STEPS,
                           agreement_on_augmented=agreement, accuracy_unaugmented=base)


@register_detector
class Duplicates(Detector):
    """Exact duplicate inputs within the training split and between training and test.
    The bundled datasets have none (0.0 on every clean pipeline), so more than 1% of
    the test inputs reappearing in training is leakage, not chance. Not applied to text
    windows, where short passages legitimately repeat (2.5% of clean charlm windows)."""

    name = "duplicates"
    description = "no test input also appears in the training split (and few duplicates within it)"
    recipe_step = "become one with the data"
    stage, kind, cost = "data", "passive", 1
    excludes = frozenset({"autoregressive"})
    example_bug = "train_test_leakage"
    MAX_CROSS, MAX_WITHIN = 0.01, 0.05

    def check(self, s):
        cross, within = duplicate_fractions(s)
        return self.decide(cross > self.MAX_CROSS or within > self.MAX_WITHIN, cross, steps=0,
                           test_in_train=cross, duplicates_within_train=within)


@register_detector
class ClassBalance(Detector):
    """Label distribution of the training split and of the batches the net actually
    sees, against the held-out split (the declared prior). Clean splits are stratified
    (total variation < 0.03) and shuffled batches match the prior within 20%; the flags
    are TV > 0.1 or a class whose share in batches is off by more than 2x.

    The held-out split is only a reference when it was not transformed the same way, so
    the training labels are also looked at on their own: a classifier whose training
    labels take a single value has nothing to learn but a constant, however well the
    other splits agree with them. On calibration the most common class holds at most
    90% of a training split (imbalanced's 9:1); a transform sent through every split's
    labels (finetune: y / 255 cast to int) leaves one."""

    name = "class_balance"
    description = "training labels and the batches fed to the net match the class prior"
    recipe_step = "become one with the data"
    stage, kind, cost = "data", "active", 1
    example_bug = "labels_scaled_like_pixels"
    MAX_TV, MAX_FACTOR = 0.1, 2.0

    def applies_to(self, capabilities) -> bool:
        return bool({"classification", "binary"} & set(capabilities))

    def check(self, s):
        k = max(s.n_classes, 2)
        prior = np.bincount(s.prepared.y_val.numpy(), minlength=k) / len(s.prepared.y_val)
        train = np.bincount(s.prepared.y_train.numpy(), minlength=k) / len(s.prepared.y_train)
        fed = np.concatenate(label_batches(s, 50))
        batches = np.bincount(fed, minlength=k) / len(fed)
        tv = float(0.5 * np.abs(train - prior).sum())
        present = prior > 0.02
        factor = float(np.max(np.maximum(batches[present] / prior[present], prior[present] / np.maximum(batches[present], 1e-9))))
        classes = int((train > 0).sum())
        return self.decide(tv > self.MAX_TV or factor > self.MAX_FACTOR or classes < 2,
                           max(tv / self.MAX_TV, factor / self.MAX_FACTOR, 2 - classes),
                           steps=50, train_vs_prior_tv=tv, worst_batch_share_factor=factor, training_classes=classes,
                           prior=prior.round(3).tolist(), batch_share=batches.round(3).tolist())


@register_detector
class LabelConsistency(Detector):
    """Leave-one-out 1-nearest-neighbour vote on raw inputs: disagreement with the
    labels in the training split vs in the (untouched) validation split, on samples of
    equal size. Flagged when the training disagreement is higher with one-sided Fisher
    p < 0.001 (clean pipelines: p > 0.05 on every seed)."""

    name = "label_consistency"
    description = "nearest-neighbour votes disagree with training labels no more than with held-out labels"
    recipe_step = "become one with the data"
    stage, kind, cost = "data", "passive", 1
    requires = frozenset({"classification"})
    example_bug = "labels_misaligned"
    ALPHA, MAX_N = 0.001, 600

    def check(self, s):
        from scipy.stats import fisher_exact

        p = s.prepared
        n = min(len(p.y_train), len(p.y_val), self.MAX_N)
        k_train, k_val = nn_disagreements(p.x_train[:n], p.y_train[:n]), nn_disagreements(p.x_val[:n], p.y_val[:n])
        pval = float(fisher_exact([[k_train, n - k_train], [k_val, n - k_val]], alternative="greater")[1])
        return self.decide(pval < self.ALPHA, -np.log10(max(pval, 1e-300)), steps=0, n=n,
                           train_disagreement=k_train / n, val_disagreement=k_val / n, p_value=pval)


@register_detector
class BatchComposition(Detector):
    """Neighbouring examples in an epoch's order share a label with probability
    sum(p_c^2) when shuffled. Flagged above that by more than 4 binomial standard
    errors plus 0.02 (a sorted or grouped order gives ~1)."""

    name = "batch_composition"
    description = "training order is shuffled: neighbouring examples do not share labels more than chance"
    recipe_step = "become one with the data"
    stage, kind, cost = "data", "active", 1
    requires = frozenset({"classification"})
    example_bug = "unshuffled_sorted_data"

    def check(self, s):
        from recipebench.harness.probes import label_run_fraction

        prior = s.class_prior
        expected = float((prior**2).sum())
        observed = label_run_fraction(s)
        n = len(s.prepared.y_train) - 1
        bound = expected + 4 * np.sqrt(expected * (1 - expected) / n) + 0.02
        return self.decide(observed > bound, observed - bound, steps=0, same_label_neighbours=observed,
                           expected_if_shuffled=expected, bound=bound)
