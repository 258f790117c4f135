"""Data bugs: what goes into the net is not what you think (recipe §1 "become one
with the data" and §2 "visualize just before the net")."""
import numpy as np
import torch
import torch.nn.functional as F

from recipebench.bugs.base import Bug, register_bug
from recipebench.harness.pipeline import Dataset, Normalizer, Splits

RECIPE = "https://karpathy.github.io/2019/04/25/recipe/"


@register_bug
class FlipWithoutLabelSwap(Bug):
    """Horizontal flip applied to the input; the orientation-dependent label is left as is."""

    name = "flip_without_label_swap"
    description = "flip augmentation flips the image but does not swap the left/right label"
    recipe_step = "visualize just before the net"
    source = f"{RECIPE} (§2: 'forgot to flip your labels'); github.com/princeton-vl/pytorch_stacked_hourglass/issues/43"
    family = "data"
    requires = frozenset({"flip_augmentation"})
    symptom = "augmented_label_agreement"
    expected_symptom = "labels of flipped examples contradict the flipped input; accuracy drops"
    severities = {"low": 0.15, "mid": 0.3, "high": 0.5}  # probability that a training example is flipped
    default_severity = "high"

    def apply(self, p):
        prob = self.level

        def flip_only(x, y, gen):
            flip = torch.rand(len(y), generator=gen) < prob  # (B,)
            return torch.where(flip[:, None, None, None], x.flip(-1), x), y  # label unchanged

        return p.replace(augment=flip_only)


@register_bug
class WrongNormalizationMean(Bug):
    """Inputs normalized with a mean that is off by ``level`` training-set std.

    Happens when constants are copied from another dataset (ImageNet's 0.485...) or
    computed on another split; worst after fine-tuning a pretrained backbone.
    """

    name = "wrong_normalization_mean"
    description = "normalization subtracts a wrong mean (off by 0.5 / 1 / 2 std of the training data)"
    recipe_step = "visualize just before the net"
    source = f"{RECIPE} (§2: 'didn't use the original mean'); discuss.pytorch.org/t/normalization-in-the-mnist-example/457"
    family = "data"
    requires = frozenset({"normalization"})
    symptom = "input_mean_abs"
    expected_symptom = "net inputs have per-channel mean far from 0; pretrained features degrade"
    severities = {"low": 0.5, "mid": 1.0, "high": 2.0}
    default_severity = "mid"

    def apply(self, p):
        offset, fit = self.level, p.fit_normalizer

        def wrong_mean(x_train):
            n = fit(x_train)
            return Normalizer(n.mean - offset * n.std, n.std)

        return p.replace(fit_normalizer=wrong_mean)


def _map_train_split(p, fn):
    """Wrap the split seam so that ``fn(train) -> train`` changes only the training split."""
    split = p.split

    def wrapped(data):
        s = split(data)
        return type(s)(fn(s.train), s.val, s.test)

    return wrapped


@register_bug
class LabelsShuffledSeparately(Bug):
    """A fraction of the training inputs reordered without their labels (``x = x[perm]``
    in one place, ``y`` left alone), so those examples carry another example's label."""

    name = "labels_misaligned"
    description = "inputs shuffled but not their labels for a fraction of the training set"
    recipe_step = "become one with the data"
    source = "https://github.com/pytorch/pytorch/issues/83270 (predictions and labels out of order after shuffling)"
    family = "data"
    requires = frozenset({"classification"})
    symptom = "label_knn_disagreement"
    expected_symptom = "nearest neighbours in input space disagree with the labels far above the clean rate"
    severities = {"low": 0.1, "mid": 0.3, "high": 0.6}
    default_severity = "mid"

    def apply(self, p):
        frac = self.level

        def misalign(train):
            rng = np.random.default_rng(0)
            idx = rng.choice(len(train.y), int(frac * len(train.y)), replace=False)
            x = train.x.copy()
            x[idx] = x[rng.permutation(idx)]
            return Dataset(x, train.y)

        return p.replace(split=_map_train_split(p, misalign))


@register_bug
class LabelsDividedBy255(Bug):
    """Integer class labels run through the image transform (``/ 255``) and cast back:
    every label becomes 0."""

    name = "labels_scaled_like_pixels"
    description = "labels divided by 255 with the pixels, then cast to int: every training label is 0"
    recipe_step = "visualize just before the net"
    source = ("https://github.com/pytorch/vision/issues/2497 (ToTensor rescales integer label masks by 1/255); "
              "https://github.com/albumentations-team/albumentations/issues/148")
    family = "data"
    requires = frozenset({"classification"})
    symptom = "label_prior_shift"
    expected_symptom = "training label distribution collapses to one class; accuracy at chance"

    def apply(self, p):
        return p.replace(split=_map_train_split(p, lambda t: Dataset(t.x, (t.y / 255).astype(np.int64))))


@register_bug
class TrainTestLeakage(Bug):
    """Test examples duplicated into the training split (e.g. augmented copies written to
    the same folder before splitting): the test metric is inflated, never worse."""

    name = "train_test_leakage"
    description = "a fraction of the test examples also appear in the training split"
    recipe_step = "become one with the data"
    source = "https://arxiv.org/abs/2207.07048 (Kapoor & Narayanan, leakage and the reproducibility crisis in ML)"
    family = "data"
    requires = frozenset({"classification"})
    symptom = "cross_split_duplicates"
    expected_symptom = "test examples with an exact duplicate in the training split"
    severities = {"low": 0.2, "mid": 0.5, "high": 1.0}
    default_severity = "mid"

    def apply(self, p):
        split, frac = p.split, self.level

        def leaky(data):
            s = split(data)
            n = int(frac * len(s.test.y))
            return type(s)(Dataset(np.concatenate([s.train.x, s.test.x[:n]]), np.concatenate([s.train.y, s.test.y[:n]])),
                           s.val, s.test)

        return p.replace(split=leaky)


@register_bug
class SortedUnshuffled(Bug):
    """Data sorted by label and never shuffled (``shuffle=False`` on a sorted dataset):
    every batch holds one or two classes and the model chases the latest one."""

    name = "unshuffled_sorted_data"
    description = "training data sorted by label and not shuffled: single-class batches"
    recipe_step = "become one with the data"
    source = "https://github.com/zalandoresearch/fashion-mnist/pull/5 (label-sorted files: 'learning algorithms may fail if people forget to shuffle')"
    family = "data"
    requires = frozenset({"classification"})
    symptom = "label_run_fraction"
    expected_symptom = "neighbouring examples share their label; batches dominated by one class; accuracy drops"

    def apply(self, p):
        return p.replace(order=lambda n, gen, y: torch.argsort(y[:n], stable=True))


@register_bug
class InvertedSamplerWeights(Bug):
    """A class-balancing sampler with weights ``count[y]`` where ``1 / count[y]`` was meant:
    the rare class is drawn even more rarely than in the data."""

    name = "sampler_drops_minority"
    description = "WeightedRandomSampler weights inverted: the minority class almost never reaches the net"
    recipe_step = "become one with the data"
    source = "https://github.com/deep-voice/soundbay/pull/49 (WeightedRandomSampler given the wrong weights)"
    family = "data"
    requires = frozenset({"imbalanced"})
    symptom = "batch_minority_ratio"
    expected_symptom = "the rare class is far rarer in batches than in the data; average precision drops"

    def apply(self, p):
        def inverted(n, gen, y):
            counts = torch.bincount(y[:n])
            weights = counts[y[:n]].double()  # meant: 1.0 / counts[y]
            return torch.multinomial(weights, n, replacement=True, generator=gen)

        return p.replace(order=inverted)


@register_bug
class NormalizedTwice(Bug):
    """Normalization applied in the dataset and again in the transform: inputs end up
    with mean -m/s and std 1/s of the raw scale."""

    name = "normalized_twice"
    description = "the normalization step runs twice on every input"
    recipe_step = "visualize just before the net"
    source = "https://github.com/rover-xingyu/Ha-NeRF/issues/15 (images normalized twice; fixed upstream)"
    family = "data"
    requires = frozenset({"normalization"})
    symptom = "input_mean_abs"
    expected_symptom = "net inputs no longer have mean 0 and std 1"

    def apply(self, p):
        normalize = p.normalize
        return p.replace(normalize=lambda x, n: normalize(normalize(x, n), n))


@register_bug
class TestTimeAugmentation(Bug):
    """The training transform (random flip) also used for the test loader."""

    name = "augmentation_at_test_time"
    description = "random training augmentation applied to the test inputs"
    recipe_step = "add significant digits to your eval"
    source = "https://github.com/mrdbourke/pytorch-deep-learning/issues/1352 (RandomHorizontalFlip in the test transform)"
    family = "data"
    requires = frozenset({"flip_augmentation"})
    symptom = "eval_nondeterminism"
    expected_symptom = "the test metric changes between two evaluations of the same model"

    def apply(self, p):
        augment, evaluate = p.augment, p.evaluate

        def augmented_eval(model, x, y):
            xa, ya = augment(x, y, torch.Generator().manual_seed(int(torch.randint(0, 2**31, (1,)))))
            return evaluate(model, xa, ya)

        return p.replace(evaluate=augmented_eval)


@register_bug
class OffByOneTargets(Bug):
    """The autoregressive target is the current token instead of the next one
    (``targets = window[:, :-1]``): the model learns to copy its input."""

    name = "off_by_one_targets"
    description = "next-token targets not shifted: each position is trained to predict itself"
    recipe_step = "use backprop to chart dependencies"
    source = "https://karpathy.github.io/2019/04/25/recipe/ (§2: 'takes the thing it's trying to predict as an input due to an off-by-one bug')"
    family = "data"
    requires = frozenset({"autoregressive", "window_targets"})
    symptom = "final_metric"
    expected_symptom = "training loss near zero, next-token accuracy collapses"

    def apply(self, p):
        def same_position_loss(logits, window):
            return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), window[:, :-1].reshape(-1))

        return p.replace(loss=same_position_loss)


@register_bug
class LabelsTransformedEverySplit(Bug):
    """The image transform (``/ 255``, then cast back) applied to the labels of every
    split, test included: the pipeline's own evaluation agrees with its corrupted labels
    and reports a near-perfect score while the model predicts one class."""

    name = "labels_transformed_every_split"
    description = "labels of every split sent through the input transform (y / 255 cast to int): all labels become 0"
    recipe_step = "become one with the data"
    source = ("https://github.com/pytorch/vision/issues/2497 (ToTensor applied to label masks rescales them); "
              "https://github.com/albumentations-team/albumentations/issues/148")
    family = "data"
    requires = frozenset({"classification"})
    symptom = "reported_metric_gap"
    expected_symptom = "the reported metric is far above the true metric; the true metric falls to the majority class"

    def apply(self, p):
        split = p.split

        def corrupted(data):
            s = split(data)
            scale = lambda d: Dataset(d.x, (d.y / 255).astype(np.int64))  # noqa: E731  the pixel transform
            return Splits(scale(s.train), scale(s.val), scale(s.test))

        return p.replace(split=corrupted)
