"""Recipe §1-2 "become one with the data" / "visualize just before the net": checks on
exactly what goes into the network."""
import numpy as np

from recipebench.detectors.base import Detector, Outcome, Verdict, register_detector
from recipebench.harness.probes import (augmentation_agreement, duplicate_fractions, epoch_order_stats,
                                        first_epoch_labels, label_batches, label_run_fraction, nn_disagreements)


def chance_bound(expected: float, n: int) -> float:
    """Upper bound on a share of ``n`` positions that each match by chance with
    probability ``expected``: 4 binomial standard errors plus 0.02, so that a clean run
    at any sample size stays below it (4 SE: a one-sided p of 3e-5 per run) and only an
    order that repeats well beyond chance crosses it."""
    return expected + 4 * np.sqrt(expected * (1 - expected) / max(n, 1)) + 0.02


@register_detector
class InputStats(Detector):
    """Per-channel mean and std of the batches just before the net.

    A normalized pipeline promises inputs with mean ~0 and std ~1 per channel. On
    clean runs the recorded batch means are within 0.01 of 0 (batches of 64 x 64+
    values), so |mean| > 0.3 or std outside [0.5, 2] is far outside clean variation
    and still catches a mean off by a third of a std.

    The std is pooled over the recorded batches (mean within-batch variance plus the
    variance of the batch means: the std of all recorded inputs), and channels that are
    constant in every recorded batch are left out: standardization leaves a constant
    feature at 0, so it promises nothing about it (scikit-learn's ``StandardScaler``
    keeps a zero-variance feature's scale at 1). Until 2026-12-03 the std was the mean
    of per-batch stds: on the 64 flattened pixels of the digits data, border pixels that
    are 0 in every image read 0, and sparse pixels that are non-zero in a few images
    read 0.2-0.45 in a batch of 64 though their std over the split is 1: 13 of 68 clean
    calibration-population draws flagged, 11 of them by this alone (suite budget,
    issue "Alarms a user can trust": about 0.2% of legitimate runs per detector).
    Pooled, such a pixel still reads 0.23-2.9 (a pixel non-zero in a few percent of the
    images is seen ~10 times in 512 recorded values: its std estimate is that noisy) and
    its mean up to 0.32, so the bounds apply to the median channel: a normalization
    mistake (a wrong mean or std constant, normalizing twice, raw pixels) moves every
    channel the same way, while a sparse channel's reading is sampling noise. On the
    100 calibration draws that left 6 flagged clean runs under the per-channel rule
    (after pooling) and none under the median.
    """

    name = "input_stats"
    description = "net inputs of a normalized pipeline have per-channel mean ~0 and std ~1"
    recipe_step = "visualize just before the net"
    stage, kind, cost = "data", "passive", 1
    requires = frozenset({"normalization"})
    example_bug = "wrong_normalization_mean"
    MAX_ABS_MEAN, STD_BAND, CONSTANT = 0.3, (0.5, 2.0), 1e-6

    def check(self, s):
        batch_mean, batch_std = np.asarray(s.trace.input_mean), np.asarray(s.trace.input_std)  # (batches, channels)
        mean = batch_mean.mean(0)
        std = np.sqrt((batch_std ** 2).mean(0) + batch_mean.var(0))  # pooled over the recorded batches
        varying = std > self.CONSTANT
        if not varying.any():  # nothing varies: no input the net could learn from
            varying = np.ones_like(varying)
        typical_mean = float(np.median(np.abs(mean[varying])))
        typical_std = float(np.median(std[varying]))
        bad_std = not self.STD_BAND[0] <= typical_std <= self.STD_BAND[1]
        return self.decide(typical_mean > self.MAX_ABS_MEAN or bad_std, typical_mean, steps=len(batch_mean),
                           median_abs_mean=typical_mean, median_std=typical_std,
                           channel_mean=mean.round(4).tolist(), channel_std=std.round(4).tolist(),
                           constant_channels=int((~varying).sum()))


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
    Not applied to text windows, where short passages legitimately repeat (2.5% of clean
    charlm windows).

    Real datasets carry natural duplicates: iris has repeated measurements (1 of 30
    test rows also in training on 7 of 94 clean calibration-population draws, which the
    former 1% bound flagged), and Barz & Denzler ("Do we train on test data? Purging
    CIFAR of near-duplicates", 2020) found 3.3% of the CIFAR-10 and 10% of the CIFAR-100
    test images duplicated in training. Suite budget (2026-12-03, issue "Alarms a user
    can trust": about 0.2% of legitimate runs per detector): more than ``MAX_CROSS`` =
    10% of the test inputs in training, the highest natural rate on record, is leakage;
    the catalog's leak copies 20-100% of the test split (``train_test_leakage``
    severities)."""

    name = "duplicates"
    description = "no test input also appears in the training split (and few duplicates within it)"
    recipe_step = "become one with the data"
    stage, kind, cost = "data", "passive", 1
    excludes = frozenset({"autoregressive"})
    example_bug = "train_test_leakage"
    MAX_CROSS, MAX_WITHIN = 0.1, 0.05

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
    """Neighbouring examples in the first epoch as the loader feeds it share a label
    with probability sum(p_c^2) when shuffled (p_c: the training split's class shares).
    Flagged above :func:`chance_bound` of that (a sorted or grouped order gives ~1).

    Read from the labels the loader actually feeds, so a sampler or shuffle that does
    not go through the ``order`` seam (DistributedSampler) is judged by what it does.
    Calibration (the 5 classification pipelines among the 10, seeds 0-4, clean and every
    negative control): every run at least 0.044 below its bound (finetune's 15 training
    examples: 0.33 vs 0.43; digits 0.09-0.11 vs 0.16); unshuffled_sorted_data reads
    0.99-1.0 on 4 of them and 0.67 on finetune, above its bound on every seed."""

    name = "batch_composition"
    description = "training order is shuffled: neighbouring examples do not share labels more than chance"
    recipe_step = "become one with the data"
    stage, kind, cost = "data", "active", 1
    requires = frozenset({"classification"})
    example_bug = "unshuffled_sorted_data"

    def check(self, s):
        expected = float((s.class_prior**2).sum())
        observed = label_run_fraction(s)
        bound = chance_bound(expected, len(first_epoch_labels(s)) - 1)
        return self.decide(observed > bound, observed - bound, steps=0, same_label_neighbours=observed,
                           expected_if_shuffled=expected, bound=bound)


@register_detector
class EpochOrder(Detector):
    """Each epoch feeds the training set in a new order (recipe: "become one with the
    data": look at what the net is fed, and in what order). The statistic is the share
    of positions at which epoch 1 feeds exactly the input epoch 0 fed there; two
    independent shuffles agree at a position with probability sum_u q_u^2 over the
    distinct inputs u (q_u their shares in epoch 0: 1/N without duplicates). Flagged
    above :func:`chance_bound` of that. A sampler that replays its order (a
    DistributedSampler whose ``set_epoch`` is never called, a generator re-seeded with a
    constant every epoch, no shuffling at all) repeats every position: 1.0.

    Not applied to a TBPTT stream (read in order by design), nor where order cannot
    matter: one batch per epoch, or a run too short to start a second epoch (decided at
    run time: ``not_applicable``). Blind spot: inputs augmented inside the Dataset never
    repeat exactly, so a replayed order there is invisible (batch_composition still sees
    a sorted one).

    Calibration (the 10 calibration pipelines, seeds 0-4, clean and every negative
    control that applies; finetune and its controls not applicable but at batch / 2):
    at most 0.001 of positions repeat where an epoch holds 1,000+ examples and 0.042
    (1 of 24) on finetune at batch / 2; every run at least 0.021 below its bound;
    unshuffled_sorted_data repeats 1.0 on the 4 calibration pipelines where it applies
    with more than one batch per epoch (digits, flip_pairs, sequence, tabular_onecycle)."""

    name = "epoch_order"
    description = "each epoch presents the training examples in a new order"
    recipe_step = "become one with the data"
    stage, kind, cost = "data", "active", 1
    excludes = frozenset({"tbptt"})
    example_bug = "unshuffled_sorted_data"

    def check(self, s):
        spe = s.steps_per_epoch
        if spe < 2 or s.pipeline.steps <= spe:
            return Verdict(Outcome.NOT_APPLICABLE, evidence={
                "reason": "one batch per epoch" if spe < 2 else "the run never starts a second epoch"})
        same, expected, n = epoch_order_stats(s)
        bound = chance_bound(expected, n)
        return self.decide(same > bound, same - bound, steps=0, repeated_positions=same,
                           expected_if_reshuffled=expected, bound=bound, positions=n)
