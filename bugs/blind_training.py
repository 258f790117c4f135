"""Held-out ("test") training bugs, written blind from public reports (issue 25): losses
fed values outside their domain, a schedule advanced per micro-batch or sized for a
longer run, a decoder cut off from its encoder, a threshold on the wrong scale, a
summed loss under a learning rate tuned for the mean, -1/+1 targets for BCE.

Written without reading ``detectors/``: each bug is a mistake someone made and reported
(``source``), re-created at the seam where it happens."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from recipebench.bugs.base import Bug, register_bug
from recipebench.harness.trace import as_list


# ---- losses outside their domain ------------------------------------------------------

@register_bug
class NllLossOnProbabilities(Bug):
    """``NLLLoss`` given softmax probabilities instead of log-probabilities: the loss is
    minus the mean probability of the true class, always negative, and its gradient
    vanishes on the examples the model gets confidently wrong."""

    name = "nll_loss_on_probabilities"
    description = "NLLLoss on softmax outputs (log missing): the loss is -p(true class), negative, weak on errors"
    recipe_step = "verify loss @ init"
    source = ("https://github.com/AnubhavGupta3377/Text-Classification-Models-Pytorch/issues/9 (NLLLoss fed softmax: "
              "'the loss is always negative'); https://github.com/clvrai/ACGAN-PyTorch/pull/4 (Softmax -> LogSoftmax "
              "to use NLLLoss)")
    family = "loss"
    split = "test"
    requires = frozenset({"classification"})
    symptom = "negative_loss_fraction"
    expected_symptom = "the training loss is below 0 from the first step (init ~ -1/C instead of log C); lower accuracy"

    def apply(self, p):
        def nll_of_softmax(output, y):
            return F.nll_loss(F.softmax(output, dim=-1), y)  # BUG: F.log_softmax was meant

        return p.replace(loss=nll_of_softmax)


def _distillation_loss(soft_targets_of, soft_prob_of):
    """The distillation pipeline's step_loss with its soft targets and the student's
    soft log-probabilities computed by the given functions of the logits / T."""
    from recipebench.harness.pipelines.distillation import CE_LOSS_WEIGHT, SOFT_TARGET_LOSS_WEIGHT, T, trained_teacher

    def step_loss(p, model, x, y):
        teacher = trained_teacher()
        with torch.no_grad():
            teacher_logits = teacher(x)  # (B, C); the cached teacher is in eval mode
        student_logits = p.forward(model, x)  # (B, C)
        soft_targets = soft_targets_of(teacher_logits / T)  # (B, C)
        soft_prob = soft_prob_of(student_logits / T)  # (B, C)
        soft_targets_loss = torch.sum(soft_targets * (soft_targets.log() - soft_prob)) / soft_prob.size()[0] * (T**2)
        return SOFT_TARGET_LOSS_WEIGHT * soft_targets_loss + CE_LOSS_WEIGHT * p.loss(student_logits, y)

    return step_loss


@register_bug
class KlDivOnStudentProbabilities(Bug):
    """The KL term of distillation given the student's probabilities where
    ``F.kl_div`` expects log-probabilities (``softmax`` where ``log_softmax`` was meant):
    the "divergence" is -H(teacher) - <teacher, student>, negative and minimized by
    piling the student's mass on the teacher's top class, not by matching the teacher."""

    name = "kl_div_on_student_probabilities"
    description = "distillation KL computed on the student's softmax instead of its log_softmax: KL goes negative"
    recipe_step = "verify loss @ init"
    source = ("https://github.com/microsoft/ProDA/issues/20 (kl_div(student, teacher) with student a softmax; the "
              "author: 'It's a bug'); https://github.com/microsoft/ProDA/issues/43")
    family = "loss"
    split = "test"
    requires = frozenset({"distillation"})
    symptom = "negative_loss_fraction"
    expected_symptom = "the distillation loss is negative (a KL cannot be); soft targets are not matched"

    def apply(self, p):
        return p.replace(step_loss=_distillation_loss(
            lambda z: F.softmax(z, dim=-1),
            lambda z: F.softmax(z, dim=-1)))  # BUG: F.log_softmax was meant


@register_bug
class MultilabelTargetsPlusMinusOne(Bug):
    """Multi-label targets encoded as -1 / +1 (the convention of hinge and
    soft-margin losses, or of an augmentation rescaling them to [-1, 1]) given to
    ``BCEWithLogitsLoss``, whose targets must lie in [0, 1]: for a -1 target the loss
    is log sigmoid(z) - 2 log(1 - sigmoid(z)), unbounded below, so the absent labels'
    logits are driven toward minus infinity and the loss falls below 0."""

    name = "multilabel_targets_plus_minus_one"
    description = "BCEWithLogitsLoss given -1/+1 targets (outside [0, 1]): the loss is unbounded below, goes negative"
    recipe_step = "verify loss @ init"
    source = ("https://github.com/bigmb/Unet-Segmentation-Pytorch-Nest-of-Unets/issues/18 (negative BCE-with-logits "
              "loss: the augmented mask's values were in [-1, 1]; 'bce's target should be [0, 1]')")
    family = "loss"
    split = "test"
    requires = frozenset({"multilabel"})
    symptom = "negative_loss_fraction"
    expected_symptom = "the training loss goes below 0 and keeps falling; logits of absent labels grow without bound"

    def apply(self, p):
        loss = p.loss

        def plus_minus_one(output, y):
            return loss(output, 2 * y - 1)  # BUG: targets in {-1, +1}, not {0, 1}

        return p.replace(loss=plus_minus_one)


@register_bug
class LossSummedWithMeanLr(Bug):
    """The loss summed over the batch (``reduction='sum'``) under a learning rate tuned
    for the mean: every gradient is batch-size times larger. Adam barely notices (it
    divides by the gradient's scale); plain SGD takes steps batch-size times too long."""

    name = "loss_summed_with_mean_lr"
    description = "loss reduction='sum' where the LR was tuned for 'mean': gradients x batch size"
    recipe_step = "verify loss @ init"
    source = ("https://github.com/PreferredAI/cornac/pull/537 (nn.BCELoss(reduction='sum') changed to the mean: "
              "'less sensitive to the size of mini-batch'); https://github.com/ai-safety-foundation/sparse_autoencoder"
              "/issues/63 (a summed batch loss, 'no good reason', switched to mean)")
    family = "loss"
    split = "test"
    requires = frozenset({"classification"})
    symptom = "init_loss_ratio"
    expected_symptom = (
        "the loss at init is batch-size x log C; under SGD the steps are batch-size x too long and training "
        "diverges; under Adam little changes")

    def apply(self, p):
        loss = p.loss

        def summed(output, y):
            return loss(output, y) * y.numel()  # BUG: reduction='sum' (the mean times the number of targets)

        return p.replace(loss=summed)


# ---- gradient accumulation ------------------------------------------------------------

@register_bug
class SchedulerSteppedPerMicroBatch(Bug):
    """``lr_scheduler.step()`` called on every micro-batch under gradient accumulation
    while the schedule was sized in optimizer updates: it runs k times too fast, so the
    warmup is over after 1/k of its length and the LR reaches its final value after 1/k
    of the training.

    The harness steps a scheduler after each optimizer step; here each such step
    advances it once per micro-batch seen since the previous one (the count is kept on
    the optimizer object, one per run)."""

    name = "scheduler_stepped_per_micro_batch"
    description = "LR scheduler stepped every micro-batch, not every optimizer update: the schedule runs k x fast"
    recipe_step = "do not trust learning rate decay defaults"
    source = ("https://github.com/starVLA/starVLA/pull/210 (lr_scheduler.step() on every micro-batch inside "
              "accelerator.accumulate(): 'the LR scheduler to advance gradient_accumulation_steps times faster'); "
              "https://github.com/Lightning-AI/pytorch-lightning/issues/1476 (a 16000-step warmup over in 1000)")
    family = "optim"
    split = "test"
    requires = frozenset({"grad_accumulation", "lr_schedule"})
    symptom = "mean_lr_ratio"
    expected_symptom = "the LR decays k times too early: mean LR about 1/k of the clean one; slower training"

    def apply(self, p):
        build, train_step = p.scheduler, p.train_step

        def count_micro_batches(pipeline, model, opt, x, y, ctx):
            first = as_list(opt)[0]
            first._micro_batches = getattr(first, "_micro_batches", 0) + 1
            return train_step(pipeline, model, opt, x, y, ctx)

        def per_micro_batch(opt, steps, steps_per_epoch):
            out = []
            for s in as_list(build(opt, steps, steps_per_epoch)):
                sched = s.scheduler
                step, seen = sched.step, {"n": 0}

                def step_per_micro_batch(*args, _step=step, _sched=sched, _seen=seen, **kwargs):
                    now = getattr(_sched.optimizer, "_micro_batches", 0)
                    for _ in range(max(1, now - _seen["n"])):  # BUG: one step() per micro-batch
                        _step(*args, **kwargs)
                    _seen["n"] = now

                sched.step = step_per_micro_batch
                out.append(s)
            return out

        return p.replace(scheduler=per_micro_batch, train_step=count_micro_batches)


@register_bug
class ScheduleSizedForLongerRun(Bug):
    """A warmup-and-decay schedule sized for a training ``level`` times longer than the
    one that runs (a ``max_steps`` / ``train_iters`` / ``lr_decay_iters`` left at the
    config's default when the run was shortened): the warmup, a share of the schedule's
    length, takes the whole run, and the decay never comes."""

    name = "schedule_sized_for_longer_run"
    description = "warmup/decay schedule sized for k x the steps actually run: the LR never finishes warming up"
    recipe_step = "do not trust learning rate decay defaults"
    source = ("https://github.com/NVIDIA-NeMo/RL/pull/939 (train_iters 'arbitrarily set to 1000' sizes the LR decay "
              "of a max_steps=20 run); https://github.com/OpenNMT/OpenNMT-tf/issues/378 (max_step 10000000: 'I "
              "didn't see any decay of the learning rate')")
    family = "optim"
    split = "test"
    requires = frozenset({"warmup_scheduler"})
    symptom = "final_lr_fraction_of_peak"
    expected_symptom = "the LR is still rising when training ends: a low mean LR, no annealing; a worse metric"
    severities = {"low": 3, "mid": 10, "high": 50}  # schedule length / steps run
    default_severity = "mid"

    def apply(self, p):
        build, k = p.scheduler, self.level

        def sized_for_longer(opt, steps, steps_per_epoch):
            return build(opt, steps * k, steps_per_epoch)  # BUG: the steps this run takes

        return p.replace(scheduler=sized_for_longer)


# ---- models and evaluation ------------------------------------------------------------

@register_bug
class DecoderNotInitializedFromEncoder(Bug):
    """The decoder's first hidden state is zeros instead of the encoder's last hidden
    state. With attention that loses a little; in the tutorial's plain decoder the
    encoder's hidden state is the only path from the source sentence, so the decoder
    is a language model of the targets that never sees the input."""

    name = "decoder_not_initialized_from_encoder"
    description = "decoder starts from a zero hidden state, not the encoder's last: the source never reaches it"
    recipe_step = "use backprop to chart dependencies"
    source = ("https://github.com/jingxil/Pointer-Networks/issues/4 (the decoder 'initialized with zero_state'; "
              "'Shouldn't the decoder initial state be initialized with the final state of the encoder?'); "
              "https://github.com/bentrevett/pytorch-seq2seq/issues/3 (without it 'it won't know anything about the "
              "sentence you are trying to translate')")
    family = "model"
    split = "test"
    requires = frozenset({"seq2seq"})
    symptom = "final_metric"
    expected_symptom = "the same output for every input: greedy accuracy at the most-frequent-digit baseline"

    def apply(self, p):
        from recipebench.harness.pipelines.seq2seq import Seq2Seq

        class ZeroInitDecoder(Seq2Seq):
            def forward(self, source, decoder_input=None):
                encoder_outputs, encoder_hidden = self.encoder(source)  # (B, S, H), (1, B, H)
                # BUG: decoder_hidden = decoder.initHidden() instead of encoder_hidden
                return self.decoder(encoder_outputs, torch.zeros_like(encoder_hidden), decoder_input)

        build = p.build_model

        def build_model(pipeline):
            model = build(pipeline)
            if type(model) is Seq2Seq:
                model.__class__ = ZeroInitDecoder  # same modules and parameter names
            return model

        return p.replace(build_model=build_model)


@register_bug
class MultilabelThresholdOnLogits(Bug):
    """Multi-label predictions thresholded at 0.5 on the raw logits of a
    ``BCEWithLogitsLoss`` model (the sigmoid forgotten): a label is predicted only when
    its probability exceeds sigmoid(0.5) = 0.62. The reported F1, and the plateau
    scheduler that reads it on the validation split, see a stricter classifier."""

    name = "multilabel_threshold_on_logits"
    description = "multi-label decisions logits > 0.5 (sigmoid forgotten) instead of sigmoid(logits) > 0.5"
    recipe_step = "add significant digits to your eval"
    source = ("https://github.com/autrainer/autrainer/issues/18 (labelled bug: the threshold in [0, 1] applied to "
              "the raw model outputs; fixed in https://github.com/autrainer/autrainer/pull/22)")
    family = "model"
    split = "test"
    requires = frozenset({"multilabel"})
    symptom = "reported_metric_gap"
    expected_symptom = "the reported F1 differs from the F1 of the model's own 0.5-probability decisions"

    def apply(self, p):
        @torch.no_grad()
        def f1_of_logits(model, x, y):
            was = model.training
            model.eval()
            pred = model(x) > 0.5  # BUG: torch.sigmoid(model(x)) > 0.5 was meant
            model.train(was)
            truth = y > 0.5
            tp = int((pred & truth).sum())
            fp, fn = int((pred & ~truth).sum()), int((~pred & truth).sum())
            return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0

        return p.replace(evaluate=f1_of_logits)
