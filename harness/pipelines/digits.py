"""Digits image classifier: sklearn digits, small CNN, Adam, with normalization,
LR-schedule and gradient-clipping seams (the recipe's skeleton, section 2)."""
from recipebench.harness.pipeline import Pipeline, register_pipeline
from recipebench.harness.pipelines.common import SmallCNN, digits as load_digits


@register_pipeline
def digits() -> Pipeline:
    return Pipeline(
        source="https://karpathy.github.io/2019/04/25/recipe/ (written for recipebench: the recipe's §2 skeleton, small CNN + Adam)",
        name="digits",
        description="10-way digit classification, 8x8 images, small CNN, Adam, constant LR, grad-norm clip 1.0",
        build_model=lambda p: SmallCNN(p.n_classes, width_mult=p.width),
        load_data=load_digits,
        n_classes=10,
        capabilities=frozenset({"classification", "normalization", "lr_schedule", "grad_clipping", "width",
                                "feature_layers", "single_optimizer"}),
        steps=150,
        clip_norm=1.0,
    )
