"""Held-out ("test") model and evaluation bugs, written blind from public reports: a
functional dropout that ignores ``model.eval()``, TensorFlow's keep probability given to
``nn.Dropout`` as its drop probability, a language model's log-softmax taken over the
time axis, an evaluation softmax taken over the batch axis, and a "test" loader built
on the training split.

Written without reading ``detectors/``: each bug is a mistake someone made and reported
(``source``), re-created at the seam where it happens."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from recipebench.bugs.base import Bug, register_bug
from recipebench.bugs.model import Then, feature_block
from recipebench.harness.pipeline import Dataset, Splits


def _map_tensors(fn, out):
    """``fn`` on every tensor of a module's output (an RNN returns (output, h) or
    (output, (h, c))); other values kept as they are."""
    if isinstance(out, torch.Tensor):
        return fn(out)
    if isinstance(out, tuple):
        return tuple(_map_tensors(fn, o) for o in out)
    return out


# ---- dropout --------------------------------------------------------------------------

@register_bug
class FunctionalDropoutAtEvaluation(Bug):
    """``x = F.dropout(x, p)`` in ``forward`` without ``training=self.training``: the
    functional form does not know the module's mode (its ``training`` argument defaults
    to True), so ``model.eval()`` leaves it on and every evaluation drops half the
    features at random. Written here as that call on the output of the network's first
    feature block."""

    name = "functional_dropout_at_evaluation"
    description = "F.dropout(x, 0.5) in forward without training=self.training: dropout stays on after eval()"
    recipe_step = "add significant digits to your eval"
    source = ("https://github.com/pytorch/pytorch/issues/26338 ('putting the model in eval mode doesn't disable "
              "dropout' for F.dropout); https://github.com/rixwew/pytorch-fm/issues/21 (F.dropout(attn_scores, "
              "p=0.1) needs training=self.training; fixed as a bug); https://github.com/BogiHsu/Tacotron2-PyTorch"
              "/issues/8 ('in the evaluation, dropout function is still working')")
    family = "model"
    split = "test"
    requires = frozenset({"feature_layers"})
    symptom = "eval_nondeterminism"
    expected_symptom = ("two evaluations of the same model on the same test inputs disagree; the reported metric is "
                        "that of a randomly thinned network")
    severities = {"default": 0.5}  # F.dropout's default p

    def apply(self, p):
        build, rate = p.build_model, self.level

        def with_functional_dropout(pipeline):
            model = build(pipeline)

            def dropout(module, args, out):
                return _map_tensors(lambda t: F.dropout(t, rate), out)  # BUG: training=module.training omitted

            feature_block(model)[2].register_forward_hook(dropout)
            return model

        return p.replace(build_model=with_functional_dropout)


@register_bug
class DropoutKeepProbAsDropProb(Bug):
    """A model ported from TensorFlow 1 (``tf.nn.dropout(x, keep_prob=0.9)``, slim's
    ``keep_prob``) or Caffe, its keep probability written into ``nn.Dropout(p)``, which
    is the probability of *dropping*: Dropout(0.1) becomes Dropout(0.9) and nine units
    in ten are zeroed (the rest scaled by 10) on every training step."""

    name = "dropout_keep_prob_as_drop_prob"
    description = "nn.Dropout given TensorFlow's keep_prob (0.9) as its drop probability p: 90% of units dropped"
    recipe_step = "overfit one batch"
    source = ("https://github.com/bonlime/keras-deeplab-v3-plus/issues/4 ('Dropout(0.9)' where the TF original had "
              "keep_prob=0.9; fixed); https://github.com/tensorforce/tensorforce/pull/111 (output_keep_prob=dropout "
              "instead of 1-dropout); https://github.com/ethereon/caffe-tensorflow/issues/110 (dropout_ratio used as "
              "keep_prob)")
    family = "model"
    split = "test"
    requires = frozenset({"dropout_batchnorm"})
    symptom = "final_metric"
    expected_symptom = "training loss stays high and noisy; the test metric falls well below the clean run's"

    def apply(self, p):
        build = p.build_model

        def keep_prob_as_p(pipeline):
            model = build(pipeline)
            for m in model.modules():
                if isinstance(m, nn.modules.dropout._DropoutNd):
                    m.p = 1.0 - m.p  # BUG: keep probability where the drop probability belongs
            return model

        return p.replace(build_model=keep_prob_as_p)


# ---- normalization over the wrong axis --------------------------------------------------

@register_bug
class LogSoftmaxOverTimeAxis(Bug):
    """A sequence model's output ``(B, T, V)`` passed through ``nn.LogSoftmax(dim=1)``
    (the classifier's ``dim=1``, copied onto a batch-first sequence output): the
    "log-probabilities" are normalized over the positions of the sequence, not over the
    vocabulary, so the score at position t depends on every later position's logits;
    the cross-entropy that follows renormalizes over the vocabulary and hides the shape
    error."""

    name = "log_softmax_over_time_axis"
    description = "LogSoftmax(dim=1) on (B, T, V) language-model outputs: normalized over time, not vocabulary"
    recipe_step = "use backprop to chart dependencies"
    source = ("https://github.com/MicrosoftDocs/pytorchfundamentals/pull/21 (LogSoftmax on the wrong dimension; "
              "'it will be wrong if we have a batch or even batch with seq_length'); "
              "https://github.com/lucidrains/DALLE-pytorch/pull/12 (softmax over the wrong dimension of the "
              "logits: the transformer did not converge until fixed)")
    family = "model"
    split = "test"
    requires = frozenset({"autoregressive"})
    symptom = "future_leak"
    expected_symptom = ("the output at position t depends on inputs after t; the training loss can fall by peeking "
                        "while next-token predictions do not improve")

    def applies_to(self, pipeline):
        return super().applies_to(pipeline) and pipeline.task == "language_model"  # (B, T, V) token outputs

    def apply(self, p):
        build = p.build_model
        return p.replace(build_model=lambda pipeline: Then(build(pipeline), nn.LogSoftmax(dim=1)))  # BUG: dim=-1


@register_bug
class SoftmaxOverBatchInEvaluation(Bug):
    """The evaluation loop turns logits into probabilities with ``F.softmax(logits,
    dim=0)`` (over the examples of the batch) and then takes ``argmax(dim=1)``: each
    class's scores are divided by that class's total over the batch, so the predicted
    class depends on the other examples and differs from the logits' argmax."""

    name = "softmax_over_batch_in_evaluation"
    description = "evaluation applies softmax(dim=0) (over the batch) before argmax over classes"
    recipe_step = "add significant digits to your eval"
    source = ("https://github.com/mrdbourke/pytorch-deep-learning/issues/163 (softmax(dim=0) on [32, 10] logits "
              "before the confusion matrix: 'lower results'; the author confirmed); "
              "https://github.com/d2l-ai/d2l-en/pull/2274 (softmax on dim 0 of (128, 120) predictions, fixed to dim 1)")
    family = "data"
    split = "test"
    requires = frozenset({"classification"})
    symptom = "reported_metric_gap"
    expected_symptom = "the reported accuracy is below the accuracy of the logits' argmax on the same model"

    def apply(self, p):
        evaluate = p.evaluate

        def softmax_over_batch(model, x, y):
            return evaluate(Then(model, nn.Softmax(dim=0)), x, y)  # BUG: dim=1 (classes) was meant

        return p.replace(evaluate=softmax_over_batch)


# ---- the wrong split ----------------------------------------------------------------

@register_bug
class EvaluatedOnTrainingSplit(Bug):
    """The test loader built on the training set (``DataLoader(trainset, ...)`` on the
    testloader line, ``test(model, device, train_loader)``): the reported "test"
    metric is the training metric."""

    name = "evaluated_on_training_split"
    description = "the test loader reads the training split: the reported test metric is the training metric"
    recipe_step = "add significant digits to your eval"
    source = ("https://github.com/mtrencseni/pytorch-playground/issues/2 (test(model, device, train_loader): 'test "
              "accuracy drops from 75% to about 20% if actually using the test set'); "
              "https://github.com/MOhammedJAbi/Imsat/issues/2 (testloader = DataLoader(trainset, ...)); "
              "https://github.com/XuyangBai/KPConv.pytorch/issues/3 (test iterator over train_loader: 'a mistake')")
    family = "data"
    split = "test"
    requires = frozenset({"classification"})
    symptom = "reported_metric_gap"
    expected_symptom = ("the reported test metric differs from the true held-out one by the generalization gap "
                        "(usually above it; below it under augmentation or label smoothing)")

    def apply(self, p):
        split = p.split

        def test_on_train(data: Dataset) -> Splits:
            s = split(data)
            return Splits(s.train, s.val, s.train)  # BUG: the test split is the training split

        return p.replace(split=test_on_train)
