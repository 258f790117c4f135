"""Recurrent-state bugs: truncated backprop through time done wrong (recipe §2 "use
backprop to chart dependencies": what the prediction at a time step may depend on)."""
import functools
import inspect

from recipebench.bugs.base import Bug, register_bug


@register_bug
class TBPTTHiddenResetEveryBatch(Bug):
    """``hidden = model.init_hidden(batch_size)`` moved inside the batch loop: the state
    is zeroed before every chunk instead of being carried (detached) from the previous
    one, so the model never sees context from before its bptt window and the first
    characters of each chunk are predicted from nothing."""

    name = "tbptt_hidden_reset_every_batch"
    description = "recurrent state re-initialised every TBPTT chunk instead of carried: no context beyond bptt steps"
    recipe_step = "use backprop to chart dependencies"
    source = ("https://github.com/lmjohns3/theanets/issues/132 (hidden state zeroed for every training sequence "
              "instead of carried as torch-rnn does: much worse validation loss); "
              "https://github.com/yikangshen/Ordered-Neurons/issues/13 (init_hidden per batch vs repackage_hidden)")
    family = "model"
    requires = frozenset({"tbptt"})
    symptom = "final_metric"
    expected_symptom = "every chunk starts from a zero state; higher held-out loss (evaluated with the state carried)"

    def apply(self, p):
        step = p.train_step
        if "carry_hidden" in inspect.signature(step).parameters:  # a TBPTT step that can be told not to carry
            return p.replace(train_step=functools.partial(step, carry_hidden=False))

        def reset_then_step(pipeline, model, opt, x, y, ctx):
            ctx.state.clear()  # BUG: nothing survives from the previous chunk
            return step(pipeline, model, opt, x, y, ctx)

        return p.replace(train_step=reset_then_step)
