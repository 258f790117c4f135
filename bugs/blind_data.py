"""Blind test bugs, data and evaluation families: mistakes taken from public reports by
a writer who has not read the detectors (split "test"). Each one is a label mapping or
vocabulary fitted per split, a sampler, a split or an oversampling done in the wrong
order, an evaluation loop, a target scaler or an attention mask as the reports
describe them (recipe §1 "become one with the data", §2 "visualize just
before the net", "add significant digits to your eval")."""
from __future__ import annotations

import numpy as np
import torch

from recipebench.bugs.base import Bug, register_bug
from recipebench.harness.pipeline import Dataset, Splits


def _appearance_order(y: np.ndarray) -> dict:
    """``{label: i for i, label in enumerate(pd.unique(y))}``: ids in order of first appearance."""
    _, first = np.unique(y, return_index=True)
    return {int(label): i for i, label in enumerate(y[np.sort(first)])}


@register_bug
class LabelIdsPerSplit(Bug):
    """The class-to-index mapping built on each split by itself, in order of first
    appearance (``label2id = {l: i for i, l in enumerate(df.label.unique())}`` run per
    split, or class folders listed per split in the file system's order): the training
    and the evaluation splits give the same class different ids.

    Written here in the training split's ids (a relabelling of the output units, which
    is what the deployed model's ``id2label`` undoes): training labels unchanged, each
    validation and test label sent through its own split's mapping and back through the
    training split's inverse. The model is as good as the clean one where nothing
    monitors the validation split; the metric the script reports is near chance."""

    name = "label_ids_per_split"
    description = "class ids assigned per split in order of first appearance: val/test ids differ from training ids"
    recipe_step = "become one with the data"
    source = ("https://github.com/uzh-rpg/rpg_event_representation_learning/issues/2 ('the train/test label "
              "mapping are inconsistent': classes from listdir per split); "
              "https://github.com/googlecodelabs/tensorflow-for-poets-2/issues/6 (evaluate.py's label order "
              "differs from training's: accuracy 'too low to be true')")
    family = "data"
    split = "test"
    requires = frozenset({"classification"})
    symptom = "reported_metric_gap"
    expected_symptom = "the reported test metric is far below the true one (near chance); val-driven schedules misfire"

    def apply(self, p):
        prepare = p.prepare_splits

        def per_split_ids(splits: Splits) -> Splits:
            out = prepare(splits)
            train_ids = _appearance_order(np.asarray(out.train.y))
            back = {i: label for label, i in train_ids.items()}

            def relabel(d: Dataset) -> Dataset:
                y = np.asarray(d.y)
                own = _appearance_order(y)
                return Dataset(d.x, np.array([back.get(own[int(v)], int(v)) for v in y], dtype=y.dtype))

            return Splits(out.train, relabel(out.val), relabel(out.test))

        return p.replace(prepare_splits=per_split_ids)


@register_bug
class VocabularyRefitPerSplit(Bug):
    """The vocabulary (tokenizer, encoder) fitted again on each split before encoding it
    (``TEXT.build_vocab(test)``, ``tokenizer.fit_on_texts(test_texts)``): every split is
    encoded with ids ranked by its own word counts, so an id means one word in training
    and another in test. The pipeline's own ``prepare_splits`` is run once per split
    with that split in the training position (the others are passed along unchanged,
    so a width computed over all splits stays the same)."""

    name = "vocabulary_refit_per_split"
    description = "vocabulary rebuilt on the validation and test splits themselves: token ids mean other words there"
    recipe_step = "become one with the data"
    source = ("https://github.com/pytorch/examples/issues/120 (inputs.build_vocab(test) before classifying the "
              "test set: 35% accuracy); https://github.com/minqukanq/hierarchical-multi-label-text-classification/"
              "issues/6 ('vocabs in train_dataset and test_dataset are not the same')")
    family = "data"
    split = "test"
    requires = frozenset({"split_fitting"})
    symptom = "final_metric"
    expected_symptom = "validation and test inputs are scrambled ids; test accuracy falls toward the majority class"

    def apply(self, p):
        prepare = p.prepare_splits

        def refit(splits: Splits) -> Splits:
            own = lambda first, a, b: prepare(Splits(first, a, b)).train  # noqa: E731  fitted on ``first``
            return Splits(own(splits.train, splits.val, splits.test), own(splits.val, splits.train, splits.test),
                          own(splits.test, splits.train, splits.val))

        return p.replace(prepare_splits=refit)


@register_bug
class SamplerGivenClassWeights(Bug):
    """``WeightedRandomSampler(class_weights, num_samples=len(dataset))`` with one weight
    per class (``1 / class_count`` from ``np.unique(y, return_counts=True)``) where one
    weight per example was meant: the sampler draws indices 0 .. C-1 only, so every
    epoch repeats the first C training examples."""

    name = "sampler_given_class_weights"
    description = "WeightedRandomSampler given per-class weights: only the first n_classes examples are ever drawn"
    recipe_step = "become one with the data"
    source = ("https://github.com/deep-voice/soundbay/pull/49 (WeightedRandomSampler 'will choose the same "
              "samples (The first and second...)': weights per class, not per sample); "
              "https://discuss.pytorch.org/t/how-to-handle-imbalanced-classes/11264")
    family = "data"
    split = "test"
    requires = frozenset({"classification"})
    symptom = "final_metric"
    expected_symptom = "the training loss goes to ~0 on a handful of examples; test accuracy near chance"

    def apply(self, p):
        def class_weight_sampler(n, gen, y):
            _, counts = torch.unique(y[:n], return_counts=True)  # (C,) of the classes present
            weights = 1.0 / counts.double()  # meant: (1.0 / counts)[y], one weight per example
            return torch.multinomial(weights, n, replacement=True, generator=gen)  # indices < C

        return p.replace(order=class_weight_sampler)


@register_bug
class OversampledBeforeSplit(Bug):
    """Classes balanced by random oversampling (``RandomOverSampler().fit_resample(X, y)``)
    of the whole data set, then ``train_test_split``: copies of the same example land in
    training and in test, and the test split is balanced and partly memorized.

    Not applied where ``prepare_splits`` fits a vocabulary (split_fitting): the harness's
    true metric re-runs the preparation on the clean split, whose vocabulary is not the
    one this run's model was trained with, so its true metric there would be an artifact."""

    name = "oversampled_before_split"
    description = "random oversampling of the smaller classes before the train/val/test split: duplicates across splits"
    recipe_step = "become one with the data"
    source = ("https://imbalanced-learn.org/stable/common_pitfalls.html (resampling before the split leaks); "
              "https://se4airesearch.github.io/DataLeakage_Website_Fall2023/pages/leakage/overlap "
              "('sampling happen before split': fit_resample before train_test_split)")
    family = "data"
    split = "test"
    requires = frozenset({"classification"})
    excludes = frozenset({"split_fitting"})
    symptom = "cross_split_duplicates"
    expected_symptom = "test examples with an exact copy in training; the reported metric above the true one"

    def apply(self, p):
        split = p.split

        def oversample_then_split(data: Dataset) -> Splits:
            y = np.asarray(data.y)
            labels, counts = np.unique(y, return_counts=True)
            rng = np.random.default_rng(0)
            extra = [rng.choice(np.flatnonzero(y == c), counts.max() - k, replace=True)
                     for c, k in zip(labels, counts) if k < counts.max()]
            idx = np.concatenate([np.arange(len(y))] + extra)
            return split(Dataset(data.x[idx], y[idx]))

        return p.replace(split=oversample_then_split)


@register_bug
class MeanOfBatchAccuracies(Bug):
    """The test metric averaged over evaluation batches (``acc += (pred == y).float().mean()``
    then ``/ len(loader)``): the last, smaller batch weighs as much as a full one."""

    name = "mean_of_batch_accuracies"
    description = "evaluation reports the mean of per-batch accuracies; the smaller last batch is over-weighted"
    recipe_step = "add significant digits to your eval"
    source = ("https://github.com/mlcommons/training/issues/89 (test accuracy as the mean of per-batch means, "
              "last batch of 40 'gets ~triple weight'); https://github.com/udacity/deep-learning-v2-pytorch/pull/74")
    family = "data"
    split = "test"
    requires = frozenset({"classification"})
    symptom = "reported_metric_gap"
    expected_symptom = "the reported accuracy differs from the per-example accuracy by a fraction of a point or more"
    severities = {"default": 64}  # evaluation batch size

    def apply(self, p):
        evaluate, size = p.evaluate, self.level

        def batch_mean(model, x, y):
            n = len(y)
            scores = [evaluate(model, x[i:i + size], y[i:i + size]) for i in range(0, n, size)]
            return float(np.mean(scores))

        return p.replace(evaluate=batch_mean)


@register_bug
class SplitWithoutShuffling(Bug):
    """Train, validation and test cut as consecutive blocks of the data in file order
    (``train_test_split(..., shuffle=False)``; Keras' ``validation_split``, which takes
    the last rows before any shuffling): where the file is grouped by class, whole
    classes are missing from training and the held-out splits hold the rest.

    Not applied to a pipeline with its own split (a pretrained backbone's target half)
    nor where ``prepare_splits`` fits a vocabulary: the harness's true metric re-runs
    the preparation on the clean split, whose vocabulary is not this run's."""

    name = "split_without_shuffling"
    description = "train/val/test split as consecutive blocks of the file order (no shuffle before splitting)"
    recipe_step = "become one with the data"
    source = ("https://github.com/keras-team/keras/issues/8346 (validation_split 'takes the last 20% of the data "
              "which is in this case the whole class 5'); https://github.com/keras-team/keras/issues/6422 "
              "(shuffle is applied after validation_split)")
    family = "data"
    split = "test"
    requires = frozenset({"classification"})
    excludes = frozenset({"pretrained_backbone", "split_fitting"})
    symptom = "label_prior_shift"
    expected_symptom = "training and validation label distributions differ; classes unseen in training; accuracy drops"
    severities = {"default": (0.2, 0.2)}  # validation and test fractions, as the clean split's

    def apply(self, p):
        val, test = self.level

        def in_file_order(data: Dataset) -> Splits:
            n = len(data.y)
            n_test, n_val = int(round(test * n)), int(round(val * n))
            pick = lambda i: Dataset(data.x[i], data.y[i])  # noqa: E731
            idx = np.arange(n)
            return Splits(pick(idx[:n - n_test - n_val]), pick(idx[n - n_test - n_val:n - n_test]), pick(idx[n - n_test:]))

        return p.replace(split=in_file_order)


@register_bug
class TargetScaledNotInverted(Bug):
    """The regression target standardized with a scaler fitted on the training targets
    (``y_scaler.fit_transform(y_train)``, validation transformed alike) and the net
    trained on it, but its predictions never sent back through
    ``y_scaler.inverse_transform``: they are read, and scored, as raw targets."""

    name = "target_scaled_not_inverted"
    description = "training targets standardized; predictions never inverse-transformed before use and scoring"
    recipe_step = "visualize just before the net"
    source = ("https://github.com/juaml/julearn/issues/236 (z-scored target: predictions and ground truth scored "
              "on different scales, r2 'shows a high error'); https://github.com/thuml/Autoformer/issues/6 "
              "(predictions 'not scaled back to their original values')")
    family = "data"
    split = "test"
    requires = frozenset({"regression"})
    symptom = "final_metric"
    expected_symptom = "predictions near 0 +- 1 against targets around their mean; R^2 far below 0"

    def apply(self, p):
        split = p.split

        def scaled_targets(data: Dataset) -> Splits:
            s = split(data)
            mean, std = float(np.mean(s.train.y)), float(np.std(s.train.y))
            z = lambda d: Dataset(d.x, ((d.y - mean) / std).astype(d.y.dtype))  # noqa: E731
            return Splits(z(s.train), z(s.val), s.test)  # the test targets stay raw: nothing inverts the output

        return p.replace(split=scaled_targets)


@register_bug
class AttentionMaskAllOnes(Bug):
    """The ``attention_mask`` of the padded training batches built as all ones (the
    padding is attended to), while inference passes the tokenizer's mask: the model
    learns with padding tokens in every [CLS] summary and is served without them."""

    name = "attention_mask_all_ones"
    description = "training batches carry an all-ones attention_mask: padded positions are attended to"
    recipe_step = "visualize just before the net"
    source = ("https://github.com/yg211/bert_nli/pull/3 ('attention masks are initialised incorrectly ... with all "
              "values set to 1'); https://github.com/huggingface/transformers/pull/16243 (outputs differ when "
              "padding tokens are not masked)")
    family = "data"
    split = "test"
    requires = frozenset({"structured_batch"})
    excludes = frozenset({"embedding_bag"})  # bags of token ids: no padding, no attention mask
    symptom = "attended_padding_fraction"
    expected_symptom = "the prediction of an example depends on how much padding its batch has; lower accuracy"

    def apply(self, p):
        unpack = p.unpack

        def unmasked(batch):
            x, y = unpack(batch)
            if isinstance(x, dict) and "attention_mask" in x:
                x = {**x, "attention_mask": torch.ones_like(x["attention_mask"])}
            return x, y

        return p.replace(unpack=unmasked)
