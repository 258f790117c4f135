"""Gradient-accumulation bugs: what reaches ``optimizer.step()`` is not the gradient of
the window's mean loss (recipe §2 "use backprop to chart dependencies"). An
accumulating pipeline's ``train_step`` takes the keyword switches ``scale_loss`` and
``zero_grad_every_batch`` (see ``harness/pipelines/accumulation.py``'s
``accumulating_step``); a bug turns one with ``functools.partial``, as the GAN
bugs do."""
import functools

from recipebench.bugs.base import Bug, register_bug


@register_bug
class AccumulatedLossNotScaled(Bug):
    """Each micro-batch's loss is backpropagated without dividing by the number of
    accumulation steps: the summed gradient is k times the gradient of the window's
    mean loss. Under Adam the step barely changes (Adam is nearly scale-invariant),
    but gradient clipping at max_norm now clips at an effective max_norm / k."""

    name = "accumulated_loss_not_scaled"
    description = "loss not divided by gradient_accumulation_steps: the stepped gradient is k x the mean's"
    recipe_step = "use backprop to chart dependencies"
    source = ("https://github.com/huggingface/transformers/pull/35207 (the Trainer, Dec 2024: after the "
              "gradient-accumulation loss rework the loss was no longer divided by the accumulation steps before "
              "backward; fixes huggingface/trl#2456); https://github.com/karpathy/nanoGPT/issues/168 (loss not "
              "divided by gradient_accumulation_steps: 'our gradient clip value is silently lower by a factor')")
    family = "loss"
    requires = frozenset({"grad_accumulation"})
    symptom = "accumulated_grad_scale"
    expected_symptom = "the gradient at each optimizer step is k x the gradient of the window's mean loss"

    def apply(self, p):
        return p.replace(train_step=functools.partial(p.train_step, scale_loss=False))


@register_bug
class ZeroGradEveryMicroBatch(Bug):
    """``optimizer.zero_grad()`` left at the top of the loop when gradient accumulation
    was added: each micro-batch wipes the ones before it, so only the last micro-batch
    of each window (divided by k) reaches the step, and k - 1 of every k batches are
    computed and thrown away."""

    name = "zero_grad_every_micro_batch"
    description = "zero_grad() before every micro-batch: only the last micro-batch of a window is stepped"
    recipe_step = "use backprop to chart dependencies"
    source = ("https://github.com/huggingface/accelerate/issues/1299 (the docs' loop zeroes at the start of each "
              "iteration and discards the accumulated gradient); https://github.com/bytetriper/RAE/issues/67; "
              "https://github.com/pytorch/torchtitan/pull/3575 ('zeroing grad from all micro-batches except the "
              "last one, i.e. no accumulation')")
    family = "optim"
    requires = frozenset({"grad_accumulation"})
    symptom = "accumulated_grad_scale"
    expected_symptom = "the gradient at each optimizer step is 1/k of one micro-batch's: the other k - 1 are lost"

    def apply(self, p):
        return p.replace(train_step=functools.partial(p.train_step, zero_grad_every_batch=True))
