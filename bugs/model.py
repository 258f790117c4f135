"""Model bugs: the architecture does something other than what its shapes suggest
(recipe §2 "use backprop to chart dependencies")."""
import torch
from torch import nn

from recipebench.bugs.base import Bug, register_bug


def view_to_sequence(x):
    return x.view(x.shape[1], x.shape[0], -1)  # (B, T, F) -> "(T, B, F)", batch items mixed


@register_bug
class ViewInsteadOfPermute(Bug):
    """``x.view(T, B, F)`` where ``x.permute(1, 0, 2)`` belonged: shapes match, items mix."""

    name = "view_instead_of_permute"
    description = "batch-first to time-first with view() instead of permute(): sequences mix batch items"
    recipe_step = "use backprop to chart dependencies"
    source = ("https://karpathy.github.io/2019/04/25/recipe/ (§2 'use backprop to chart dependencies'); "
              "stackoverflow.com/questions/51143206")
    family = "model"
    requires = frozenset({"sequence_model"})
    symptom = "batch_leak"
    expected_symptom = "each output depends on other items of the batch; predictions change with batch composition"

    def apply(self, p):
        return p.replace(to_sequence=view_to_sequence)


@register_bug
class OverconfidentOutputInit(Bug):
    """Final layer initialized with weights ``level`` x too large (e.g. ``normal_(std=1)``
    on a wide layer): the net starts confidently wrong, far from -log(1/C)."""

    name = "overconfident_output_init"
    description = "output layer weights scaled up at init: loss @ init far above -log(1/C), hockey-stick loss"
    recipe_step = "verify loss @ init"
    source = ("https://karpathy.github.io/2019/04/25/recipe/ (§2 'verify loss @ init', 'init well'); "
              "https://cs231n.github.io/neural-networks-3/#sanitycheck")
    family = "model"
    requires = frozenset({"classification"})
    symptom = "init_loss_ratio"
    expected_symptom = "loss at init several times -log(1/C); slower, worse convergence"
    severities = {"low": 10.0, "mid": 30.0, "high": 100.0}
    default_severity = "mid"

    def apply(self, p):
        build, scale = p.build_model, self.level

        def build_overconfident(pipeline):
            model = build(pipeline)
            last = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
            with torch.no_grad():
                last.weight.mul_(scale)
            return model

        return p.replace(build_model=build_overconfident)


def _wrap_build(p, fn):
    """A copy of ``p`` whose ``build_model`` post-processes the model with ``fn(model, p)``."""
    build = p.build_model
    return p.replace(build_model=lambda pipeline: fn(build(pipeline), pipeline))


class Then(nn.Sequential):
    """``nn.Sequential(model, *after)`` for a model of any call signature (token lists
    with offsets, keyword inputs): the first module gets every argument. Parameter
    names are those of ``nn.Sequential``."""

    def forward(self, *args, **kwargs):
        out = self[0](*args, **kwargs)
        for module in list(self)[1:]:
            out = module(out)
        return out


def detached(out):
    """``out`` with every tensor in it detached (nested tuples kept as they are)."""
    if isinstance(out, torch.Tensor):
        return out.detach()
    return tuple(detached(o) for o in out) if isinstance(out, tuple) else out


def _last_linear(model: nn.Module) -> nn.Linear:
    return [m for m in model.modules() if isinstance(m, nn.Linear)][-1]


@register_bug
class MissingCausalMask(Bug):
    """Attention without its causal mask: every position sees the characters after it,
    including the one it must predict."""

    name = "missing_causal_mask"
    description = "self-attention built without the causal mask: future tokens are visible"
    recipe_step = "use backprop to chart dependencies"
    source = ("https://karpathy.github.io/2019/04/25/recipe/ (§2: 'ensure that your autoregressive model at time t "
              "only depends on 1..t-1'); https://github.com/alex-matton/causal-transformer-decoder/issues/1")
    family = "model"
    requires = frozenset({"causal_attention"})
    symptom = "future_leak"
    expected_symptom = "outputs at t depend on inputs after t; train loss collapses, honest next-token accuracy falls"

    def apply(self, p):
        return p.replace(attn_mask=lambda t: None)


@register_bug
class SoftmaxBeforeCrossEntropy(Bug):
    """The model ends in ``nn.Softmax`` and its probabilities go into ``CrossEntropyLoss``,
    which applies log-softmax again: gradients shrink and the loss cannot go below ~1.46."""

    name = "softmax_before_cross_entropy"
    description = "probabilities (softmax output) passed to a loss that expects logits"
    recipe_step = "verify loss @ init"
    source = ("https://twitter.com/karpathy/status/1013244313327681536 ('you passed softmaxed outputs to a loss that "
              "expects raw logits'); https://github.com/Lightning-Universe/lightning-bolts/issues/654")
    family = "model"
    requires = frozenset({"classification"})
    symptom = "output_is_probability"
    expected_symptom = "outputs are non-negative rows summing to 1; training loss plateaus high"

    def apply(self, p):
        return _wrap_build(p, lambda m, _: Then(m, nn.Softmax(dim=-1)))


def feature_block(model: nn.Module) -> tuple[nn.Module, str, nn.Module]:
    """(parent, name, block): the network's first block holding parameters. A model
    written as one container (``nn.Sequential`` of everything) is descended into until
    its children are the layers; pipelines that offer ``feature_layers`` have such a
    block before their output layer."""
    parent = model
    while True:
        kids = [(n, c) for n, c in parent.named_children() if any(True for _ in c.parameters())]
        if len(kids) == 1 and any(True for _ in kids[0][1].children()):
            parent = kids[0][1]
            continue
        name, block = kids[0]
        return parent, name, block


class _Hidden(nn.Module):
    """Holds a block in a plain Python list: it runs in ``forward`` but its parameters
    are invisible to ``parameters()``, ``state_dict()`` and ``.train()``."""

    def __init__(self, block: nn.Module):
        super().__init__()
        self.layers = [block]  # BUG: a list, not nn.ModuleList

    def forward(self, *args):
        return self.layers[0](*args)


@register_bug
class LayersInPythonList(Bug):
    """The feature layers kept in a plain Python list instead of ``nn.ModuleList``: they
    run in forward but are not registered, so the optimizer never sees them."""

    name = "layers_in_python_list"
    description = "feature layers in a plain list, not nn.ModuleList: never trained, not in state_dict"
    recipe_step = "overfit one batch"
    source = "https://github.com/pytorch/pytorch/issues/59925 (layers in a list: 'optimizers may silently fail to update')"
    family = "model"
    requires = frozenset({"classification", "feature_layers"})
    symptom = "registered_param_fraction"
    expected_symptom = "fewer registered parameters than the forward pass uses; features stay random"

    def apply(self, p):
        def hide_feature_block(model, _):
            parent, name, block = feature_block(model)
            parent._modules[name] = _Hidden(block)  # same place in forward (also inside nn.Sequential)
            return model

        return _wrap_build(p, hide_feature_block)


@register_bug
class FrozenFeatures(Bug):
    """``requires_grad = False`` on the feature layers (copied from a fine-tuning script),
    on a model that was never pretrained: random features, only the head learns."""

    name = "frozen_parameters"
    excludes = frozenset({"pretrained_backbone"})  # freezing a pretrained backbone is a legitimate choice
    description = "feature layers accidentally frozen (requires_grad=False) on a model trained from scratch"
    recipe_step = "overfit one batch"
    source = "https://discuss.pytorch.org/t/how-the-pytorch-freeze-network-in-some-layers-only-the-rest-of-the-training/7088"
    family = "model"
    requires = frozenset({"classification", "feature_layers"})
    symptom = "frozen_param_fraction"
    expected_symptom = "parameters with no gradient that never change; accuracy drops"

    def apply(self, p):
        def freeze(model, _):
            for q in feature_block(model)[2].parameters():
                q.requires_grad_(False)
            return model

        return _wrap_build(p, freeze)


@register_bug
class OutputBiasNotInitialized(Bug):
    """The output bias left at its default instead of the prior log-odds / target mean
    (recipe "init well"): a hockey-stick loss curve while the net learns the bias."""

    name = "output_bias_not_initialized"
    description = "output bias not set to the class prior log-odds or the target mean"
    recipe_step = "init well"
    source = "https://karpathy.github.io/2019/04/25/recipe/ (§2 'init well': 'initialize the final bias to 50')"
    family = "model"
    requires = frozenset({"output_bias_init"})
    symptom = "init_loss_ratio"
    expected_symptom = "loss at init far above the prior entropy / target variance; hockey-stick loss"

    def apply(self, p):
        def zero_bias(model, _):
            with torch.no_grad():
                _last_linear(model).bias.zero_()
            return model

        return _wrap_build(p, zero_bias)


@register_bug
class TrainModeDuringEval(Bug):
    """``model.eval()`` forgotten before evaluation: dropout still drops and batch norm
    normalizes with the test batch's own statistics."""

    name = "train_mode_during_eval"
    description = "evaluation without model.eval(): dropout active, batch norm uses test-batch statistics"
    recipe_step = "add significant digits to your eval"
    source = "https://twitter.com/karpathy/status/1013244313327681536 ('you forgot to toggle train/eval mode for the net')"
    family = "model"
    requires = frozenset({"dropout_batchnorm"})
    symptom = "eval_nondeterminism"
    expected_symptom = "predictions on the same test input change between evaluations; metric drops"

    def apply(self, p):
        evaluate = p.evaluate

        def eval_in_train_mode(model, x, y):
            train = model.train
            model.eval = lambda: train(True)  # the call that should switch modes does nothing
            try:
                return evaluate(model, x, y)
            finally:
                del model.eval

        return p.replace(evaluate=eval_in_train_mode)


@register_bug
class PretrainedWeightsReinitialized(Bug):
    """The pretrained state dict is loaded, then the init routine runs again
    (``model.apply(init_weights)`` after ``load_state_dict``): pretraining is lost."""

    name = "pretrained_weights_reinitialized"
    description = "weights re-initialized after loading the pretrained checkpoint"
    recipe_step = "pretrain"
    source = "https://github.com/huggingface/transformers/issues/46620 (from_pretrained weights re-initialized after loading)"
    family = "model"
    requires = frozenset({"pretrained_backbone"})
    symptom = "final_metric"
    expected_symptom = "fine-tuning starts from random features; accuracy drops on the small target set"

    def apply(self, p):
        def reinit(model, _):
            for m in model.modules():
                if hasattr(m, "reset_parameters"):
                    m.reset_parameters()
            return model

        return _wrap_build(p, reinit)


@register_bug
class DetachedFeatures(Bug):
    """A ``.detach()`` left in the forward pass (as in a GAN's generator loss) between the
    features and the head: no gradient reaches the feature layers."""

    name = "detached_features"
    description = "features .detach()ed before the head: only the head receives gradients"
    recipe_step = "use backprop to chart dependencies"
    source = "https://github.com/NVlabs/DG-Net/issues/40 (a .detach() in the model leaves a loss with no effect on its parameters)"
    family = "model"
    requires = frozenset({"classification", "feature_layers"})
    symptom = "frozen_param_fraction"
    expected_symptom = "feature parameters get exactly zero gradient; accuracy drops"

    def apply(self, p):
        def detach_feature_block(model, _):
            def detach(module, args, out):  # a GRU returns (output, h), an LSTM (output, (h, c)): detach all
                return detached(out)

            feature_block(model)[2].register_forward_hook(detach)
            return model

        return _wrap_build(p, detach_feature_block)


@register_bug
class EvalModeDuringTraining(Bug):
    """``model.eval()`` called (e.g. by a validation hook) and never switched back:
    training runs without dropout and with frozen batch-norm running statistics."""

    name = "eval_mode_during_training"
    description = "model left in eval mode while training: no dropout, batch norm uses its running statistics"
    recipe_step = "add significant digits to your eval"
    source = "https://github.com/fartashf/vsepp/issues/4 (validation calls eval(), train mode not restored)"
    family = "model"
    requires = frozenset({"dropout_batchnorm"})
    symptom = "eval_mode_training_fraction"
    expected_symptom = "the model is in eval mode during training steps"

    def apply(self, p):
        step = p.train_step

        def train_in_eval_mode(pipeline, model, opt, x, y, ctx):
            model.eval()
            return step(pipeline, model, opt, x, y, ctx)

        return p.replace(train_step=train_in_eval_mode)
