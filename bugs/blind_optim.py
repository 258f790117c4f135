"""Held-out ("test") optimizer, loss and training-loop bugs, written blind from public
reports: gradients zeroed between ``backward()`` and ``step()``, a warmup scheduler
never stepped, an optimizer holding the parameters of a head that was replaced after it
was built, gradients clipped element-wise by value where the total norm was meant, a
padding index that is also a real class given to ``ignore_index``.

Written without reading ``detectors/``: each bug is a mistake someone made and reported
(``source``), re-created at the seam where it happens."""
from __future__ import annotations

import types

from torch import nn

from recipebench.bugs.base import Bug, register_bug
from recipebench.harness.trace import as_list


# ---- the training loop ----------------------------------------------------------------

@register_bug
class ZeroGradBetweenBackwardAndStep(Bug):
    """``optimizer.zero_grad()`` placed between ``loss.backward()`` and
    ``optimizer.step()``: the step finds every gradient cleared (``None`` with
    ``set_to_none``) and moves nothing, so the model stays at its initialization while
    the loop runs, the loss is printed and nothing fails.

    Re-created on the optimizer: each ``step()`` first clears the gradients, whatever
    the script's ``train_step`` does before it (two optimizers, accumulation). An
    optimizer that recomputes the gradient inside ``step(closure)`` (L-BFGS) is not
    affected, as in the script."""

    name = "zero_grad_between_backward_and_step"
    description = "optimizer.zero_grad() between loss.backward() and optimizer.step(): every step is empty"
    recipe_step = "verify decreasing training loss"
    source = ("https://github.com/lucidrains/byol-pytorch/issues/93 ('I don't think you can set the gradients to "
              "zero right before stepping the optimizer'; the author: facepalm, fixed); "
              "https://github.com/sacmehta/EdgeNets/issues/14 (zero_grad() before step(): 'I was having issues "
              "until I moved zero_grad() above loss.backward()'); https://github.com/Tony-Y/pytorch_warmup/issues/12 "
              "('Your code does not optimize model parameters at all because optimizer.zero_grad() is called after "
              "loss.backward()')")
    family = "optim"
    split = "test"
    symptom = "final_metric"
    expected_symptom = "the parameters never move: flat training loss, test metric of an untrained model"

    def apply(self, p):
        build = p.optimizer

        def zeroed_before_step(named_params, lr):
            opt = build(named_params, lr)
            for o in as_list(opt):
                def step(self, *args, _step=o.step, **kwargs):
                    self.zero_grad(set_to_none=True)  # BUG: belongs before loss.backward(), not after it
                    return _step(*args, **kwargs)

                o.step = types.MethodType(step, o)  # a bound method, as LR schedulers expect to wrap
            return opt

        return p.replace(optimizer=zeroed_before_step)


@register_bug
class WarmupSchedulerNeverStepped(Bug):
    """A warmup schedule built on the optimizer but ``lr_scheduler.step()`` missing from
    the loop: constructing the scheduler already set the LR to the schedule's first
    value (0 for a linear warmup from zero, max_lr / 25 for OneCycleLR), and nothing
    ever moves it again. Training runs the whole time at the bottom of the warmup."""

    name = "warmup_scheduler_never_stepped"
    description = "warmup scheduler built but scheduler.step() never called: LR stays at the warmup's start"
    recipe_step = "do not trust learning rate decay defaults"
    source = ("https://github.com/saforem2/ezpz/pull/128 ('Make the loss actually decrease': the ViT example "
              "built a warmup LambdaLR and never called lr_scheduler.step(); the fix adds it after "
              "optimizer.step())")
    family = "optim"
    split = "test"
    requires = frozenset({"warmup_scheduler"})
    symptom = "mean_lr_ratio"
    expected_symptom = "the LR never leaves the warmup's first value: mean LR near 0; slow or no training"

    def apply(self, p):
        build = p.scheduler

        def built_never_stepped(opt, steps, steps_per_epoch):
            build(opt, steps, steps_per_epoch)  # the constructor sets the schedule's first LR
            return None  # BUG: lr_scheduler.step() is never called

        return p.replace(scheduler=built_never_stepped)


# ---- what the optimizer is given ------------------------------------------------------

@register_bug
class OptimizerHoldsReplacedHead(Bug):
    """The optimizer built over the pretrained model's parameters before its classifier
    head was replaced (``opt = SGD(model.parameters(), ...)``, then ``model.fc =
    nn.Linear(features, n_classes)``): the optimizer still holds the old head's tensors,
    which no longer receive gradients, and never sees the new head. The new head gets a
    gradient on every backward and keeps its random initialization; only the backbone
    learns, under a fixed random read-out."""

    name = "optimizer_holds_replaced_head"
    description = "optimizer built before model.fc was replaced: the new head is never updated (stays random)"
    recipe_step = "use backprop to chart dependencies"
    source = ("https://github.com/pytorch/pytorch/issues/54765 (network changed after the optimizer was built: 'You "
              "need to reinitialize the optimizer; otherwise it doesn't know anything about the new nets "
              "parameters'); https://github.com/microsoft/nni/issues/4521 ('The parameters are not updated when the "
              "pruned model is finetuned': layers replaced, 'the parameters registered in the optimizer are outdated')")
    family = "optim"
    split = "test"
    requires = frozenset({"pretrained_backbone"})
    symptom = "final_metric"
    expected_symptom = "the output layer keeps its initial weights; lower accuracy than fine-tuning the whole model"

    def apply(self, p):
        build = p.optimizer

        def built_before_head_replaced(named_params, lr):
            head = named_params[-1][0].rpartition(".")[0]  # the output layer: the module of the last parameter
            old = [(n, nn.Parameter(q.detach().clone()) if n.rpartition(".")[0] == head else q)  # BUG: the old
                   for n, q in named_params]  # head's tensors, no longer in the model
            return build(old, lr)

        return p.replace(optimizer=built_before_head_replaced)


@register_bug
class ClipByValueInsteadOfNorm(Bug):
    """``clip_grad_value_(params, c)`` (Keras ``clipvalue``) where the recipe's
    ``clip_grad_norm_(params, c)`` (``clipnorm``) was meant: each gradient element is
    clamped to [-c, c], so the total norm may reach c * sqrt(number of weights), far
    above the bound, and the direction of the gradient changes where elements are cut."""

    name = "clip_by_value_instead_of_norm"
    description = "clip_grad_value_(c) where clip_grad_norm_(c) was meant: the total gradient norm is not bounded"
    recipe_step = "use backprop to chart dependencies"
    source = ("https://github.com/Happy-Algorithms-League/hal-cgp/pull/210 (clip_grad_value replaced by norm "
              "clipping: value clipping changes the gradient's direction); https://github.com/ymcui/Eval-on-NN-of-RC"
              "/issues/3 ('Gradient Clip' means clipnorm, not clipvalue); https://github.com/neuroailab/tfutils/"
              "issues/115 (a ClipOptimizer that always clipped by value)")
    family = "optim"
    split = "test"
    requires = frozenset({"grad_clipping"})
    symptom = "max_grad_norm"
    expected_symptom = "gradient norms above the clip threshold reach the optimizer (element-wise clamp only)"

    def apply(self, p):
        def clip_by_value(model, max_norm):
            nn.utils.clip_grad_value_(model.parameters(), max_norm)  # BUG: clip_grad_norm_ was meant

        return p.replace(clip=clip_by_value)


# ---- losses ---------------------------------------------------------------------------

@register_bug
class IgnoreIndexIsARealClass(Bug):
    """``CrossEntropyLoss(ignore_index=pad_index)`` with ``pad_index = 0`` while 0 is
    also a real label: every example of class 0 is silently dropped from the loss, so
    the model is never taught class 0 and, since every other example pushes its logit
    down, never predicts it."""

    name = "ignore_index_is_a_real_class"
    description = "cross-entropy ignore_index=0 (the padding id) while 0 is a real class: class 0 never learned"
    recipe_step = "verify loss @ init"
    source = ("https://github.com/nyu-mll/jiant/issues/925 (labelled bug, 'Tagger ignoring 0 class for "
              "cross_entropy': ignore_index set to the pad index while 0 is a target class, 'wonky runs')")
    family = "loss"
    split = "test"
    requires = frozenset({"classification"})
    symptom = "final_metric"
    expected_symptom = "class 0 is never predicted: accuracy falls by about its share of the test set"

    def apply(self, p):
        loss = p.loss

        def pad_id_ignored(output, y):
            keep = y != 0  # BUG: ignore_index=PAD, and PAD = 0 is also a class
            if not bool(keep.any()):  # a batch of class 0 only contributes nothing
                return output.sum() * 0.0
            return loss(output[keep], y[keep])

        return p.replace(loss=pad_id_ignored)
