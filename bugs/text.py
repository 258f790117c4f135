"""Text pipeline bugs: a vocabulary fitted on more than the training split, and bags
of token ids whose offsets do not delimit the texts (recipe §1 "become one with the
data", §2 "visualize just before the net")."""
import numpy as np
import torch

from recipebench.bugs.base import Bug, register_bug
from recipebench.harness.pipeline import Dataset, Splits


def _concat(*parts: Dataset) -> Dataset:
    return Dataset(np.concatenate([d.x for d in parts]), np.concatenate([d.y for d in parts]))


@register_bug
class VocabularyFittedOnAllSplits(Bug):
    """The preparation fitted on every split (``build_vocab_from_iterator`` over the
    whole corpus before splitting; a scaler or encoder ``fit`` on all rows), then
    applied to each: words that occur only in validation or test get ids of their own
    instead of ``<unk>``. The pipeline's own ``prepare_splits`` is run on a training
    split that holds every row; the training rows are then taken back from it (row
    order is kept by a row-wise transform)."""

    name = "vocabulary_fitted_on_all_splits"
    description = "vocabulary (or any split-fitted preparation) built from train + val + test rows"
    recipe_step = "become one with the data"
    source = ("https://scikit-learn.org/stable/common_pitfalls.html#data-leakage (fit preprocessing on the "
              "training subset only); https://fadibenz.vercel.app/blog/data-leakage-tokenization (a tokenizer "
              "trained on validation text: no measurable bias at scale)")
    family = "data"
    requires = frozenset({"split_fitting"})
    symptom = "unseen_input_ids"
    expected_symptom = ("ids that never occur in training appear in the test inputs (clean: only <unk>); "
                        "small or no metric change")

    def apply(self, p):
        prepare = p.prepare_splits

        def fit_on_all(splits: Splits) -> Splits:
            n = len(splits.train.y)
            out = prepare(Splits(_concat(splits.train, splits.val, splits.test), splits.val, splits.test))
            return Splits(Dataset(out.train.x[:n], out.train.y[:n]), out.val, out.test)

        return p.replace(prepare_splits=fit_on_all)


def _pair_lengths(lengths: torch.Tensor) -> torch.Tensor:
    """``offsets = [0] + [len(entry) for entry in batch]`` then the tutorial's cumsum:
    ``len`` of each (row, label) pair (2), not of its text."""
    return torch.cat([lengths.new_zeros(1), torch.full_like(lengths[:-1], 2)]).cumsum(0)  # (B,)


@register_bug
class OffsetsFromPairLength(Bug):
    """``collate_batch`` counts ``len(entry)`` of each batch item, the (text, label)
    pair, where ``len(text)`` was meant: the offsets are 0, 2, 4, ... (increasing and
    inside the text, so EmbeddingBag accepts them). Every bag but the last is two
    tokens from the front of the batch; the last holds nearly everything. The one
    collate function serves training and evaluation alike.

    The literal mistake asked for, offsets given as the texts' lengths instead of their
    cumulative sum, is not silent on torch 2.13 (CPU): as soon as a text is shorter than
    the one before, EmbeddingBag raises ``RuntimeError: Expected i < index_size``."""

    name = "offsets_from_pair_length"
    description = "EmbeddingBag offsets from len() of each (text, label) pair (0, 2, 4, ...), not the texts' lengths"
    recipe_step = "visualize just before the net"
    source = ("https://github.com/pytorch/pytorch/issues/55549 (embedding_bag does not check that offsets delimit "
              "the bags: wrong offsets give silently wrong bags); https://github.com/pytorch/tutorials/issues/1359 "
              "(the tutorial's offsets construction confuses readers)")
    family = "data"
    requires = frozenset({"embedding_bag"})
    symptom = "final_metric"
    expected_symptom = ("bags are not the texts: two tokens per example, the last bag takes the batch; "
                        "accuracy near chance")

    def apply(self, p):
        from functools import partial

        from recipebench.harness.pipelines.text_classification import bag_accuracy, bag_forward, bag_loader

        return p.replace(loader=partial(bag_loader, offsets_of=_pair_lengths),
                         forward=partial(bag_forward, offsets_of=_pair_lengths),
                         evaluate=partial(bag_accuracy, offsets_of=_pair_lengths))
