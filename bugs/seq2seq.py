"""Sequence-to-sequence bugs: teacher forcing wired wrong (recipe §2 "use backprop to
chart dependencies", "add significant digits to your eval").

Both assume the ``seq2seq`` contract of :mod:`recipebench.harness.pipelines.seq2seq`:
the model takes ``(source, decoder_input)`` and alone, ``model(source)``, decodes
greedily; targets are token ids (B, T) with SOS = 0 and EOS = 1."""
import torch

from recipebench.bugs.base import Bug, register_bug
from recipebench.harness.pipelines.seq2seq import shift_right, token_accuracy


@register_bug
class DecoderInputNotShifted(Bug):
    """Teacher forcing with the target itself as the decoder's input instead of the
    target shifted right behind SOS: the decoder reads token t while predicting token
    t, learns to copy it, and its training loss falls toward 0, while greedy decoding,
    which has no target to copy, fails."""

    name = "decoder_input_not_shifted"
    description = "decoder input = the target itself (not shifted right with SOS): the decoder learns to copy"
    recipe_step = "use backprop to chart dependencies"
    source = ("https://github.com/huggingface/transformers/issues/11977 (decoder_input_ids = labels: 'the trained "
              "model will generate gibberish'; answer: decoder inputs must be the labels shifted one position right); "
              "https://github.com/Kyubyong/transformer/issues/94 ('the model is copying the decoder input to its "
              "output. The train is doing well but not Test')")
    family = "model"
    requires = frozenset({"seq2seq"})
    symptom = "final_metric"
    expected_symptom = "training loss near 0; greedy-decoding accuracy on the test split collapses"

    def apply(self, p):
        def target_as_decoder_input(pipeline, model, x, y):
            return pipeline.loss(pipeline.forward(model, (x, y)), y)  # BUG: should be (x, shift_right(y))

        return p.replace(step_loss=target_as_decoder_input)


@register_bug
class TeacherForcingAtEvaluation(Bug):
    """Evaluation runs the decoder with teacher forcing (the test targets, shifted right,
    as its inputs) instead of decoding greedily from its own predictions: every step is
    told the right previous token, so the reported accuracy is that of a model that is
    never wrong before the current token."""

    name = "teacher_forcing_at_evaluation"
    description = "test accuracy computed with the test targets fed to the decoder (teacher forcing), not greedy"
    recipe_step = "add significant digits to your eval"
    source = ("https://github.com/keon/seq2seq/issues/8 ('Model still uses teacher forcing when evaluating'); "
              "https://github.com/sgrvinod/a-PyTorch-Tutorial-to-Image-Captioning/issues/6 (validation with teacher "
              "forcing: 'the validation metric may not actually reflect real performance')")
    family = "model"
    requires = frozenset({"seq2seq"})
    symptom = "reported_metric_gap"
    expected_symptom = "the reported test accuracy is far above greedy decoding's"

    def apply(self, p):
        @torch.no_grad()
        def teacher_forced_accuracy(model, x, y):
            was = model.training
            model.eval()
            pred = p.forward(model, (x, shift_right(y))).argmax(-1)  # BUG: the decoder reads the test targets
            model.train(was)
            return token_accuracy(pred, y)

        return p.replace(evaluate=teacher_forced_accuracy)
