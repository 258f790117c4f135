"""Distillation bugs: the teacher's targets are not what the teacher predicts. A
distillation pipeline's ``step_loss`` takes the keyword switch
``teacher_in_train_mode`` (see ``harness/pipelines/distillation.py``'s
``knowledge_distillation_loss``); the bug turns it on with ``functools.partial``."""
import functools

from recipebench.bugs.base import Bug, register_bug


@register_bug
class TeacherInTrainMode(Bug):
    """``teacher.eval()`` forgotten: the teacher computes the soft targets in train
    mode, so its dropout (or batch norm on the batch's own statistics) puts noise
    into every target, and the same input gets different targets at each visit."""

    name = "teacher_in_train_mode"
    description = "teacher left in train mode while giving the soft targets: dropout noise in the targets"
    recipe_step = "add significant digits to your eval"
    source = ("https://github.com/vrvlive/knowlege-distillation/issues/2 ('I don't see .eval() called on the "
              "teacher to deactivate Dropout and change the behavior of BatchNorm'); "
              "https://github.com/Sharpiless/yolov5-knowledge-distillation/issues/5 ('Why teacher model is "
              ".train() instead of .eval()?')")
    family = "model"
    requires = frozenset({"distillation"})
    symptom = "loss_nondeterminism"
    expected_symptom = "the same student's loss on the same batch, in eval mode, changes with the random seed"

    def apply(self, p):
        return p.replace(step_loss=functools.partial(p.step_loss, teacher_in_train_mode=True))
