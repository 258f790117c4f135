"""torcheck (PyPI ``torcheck`` 1.0.1): checks registered on the optimizer and model
raise during training. The adapter sets torcheck up as its README does once the
pipeline builds its optimizer (``register(optimizer)``, ``add_module_changing_check``,
``add_module_nan_check``, ``add_module_inf_check`` on the whole model), trains the
pipeline once end to end, and flags the run when torcheck raises, at set-up (a model
parameter the optimizer does not hold) or at any step (a parameter that did not
change, a NaN or Inf in a parameter or the output). torcheck's metadata pins torch<2.0;
it runs on torch 2.x and is installed without its dependencies (``pip install --no-deps
torcheck``).

One incompatibility with torch 2.x is bridged: ``register`` replaces ``optimizer.step``
with a plain function, and a torch 2.x LR scheduler built on that optimizer wraps
``optimizer.step.__func__``, which a plain function lacks (``AttributeError: 'function'
object has no attribute '__func__'``; every pipeline with a scheduler was an error cell,
480 of the zoo's 1,240 runs). The adapter binds torcheck's checked step back to the
optimizer as a method: the same call, the same checks, and the scheduler can wrap it."""
import traceback
import types

from recipebench.detectors.base import Detector, Outcome, Verdict, register_detector


@register_detector
class Torcheck(Detector):
    name = "torcheck"
    description = "torcheck's parameter-changing, NaN and Inf checks raise during training"
    recipe_step = "peer tool: torcheck (unit checks on parameters and outputs)"
    stage, kind, cost = "peers", "active", 3
    peer = True
    example_bug = "detached_features"

    def check(self, s):
        try:
            import torcheck
        except ImportError:
            return Verdict(Outcome.ERROR, evidence={"message": "torcheck is not installed: pip install --no-deps torcheck"})
        model = s.fresh_model()
        registry = torcheck.Registry()  # a private registry: no state shared between runs
        optimizer = s.pipeline.optimizer

        def checked_optimizer(named_params, lr):
            opt = optimizer(named_params, lr)
            for o in opt if isinstance(opt, (list, tuple)) else (opt,):
                registry.register(o)  # o.step is now torcheck's checked step, a plain function
                o.step = types.MethodType(lambda _, *a, _checked=o.step, **k: _checked(*a, **k), o)
            registry.add_module_changing_check(model, module_name="model")
            registry.add_module_nan_check(model, module_name="model")
            registry.add_module_inf_check(model, module_name="model")
            return opt

        subject = type(s)(s.pipeline.replace(optimizer=checked_optimizer), s.seed)
        done = [0]

        def count(losses):
            done[0] = len(losses)
            return False

        try:
            subject.train(model, s.pipeline.steps, s.batches(), stop=count)
        except RuntimeError as exc:
            if not any("torcheck" in frame.filename for frame in traceback.extract_tb(exc.__traceback__)):
                raise  # the pipeline's own failure, not a torcheck finding
            message = " ".join(str(exc).split())[:500]
            return self.decide(True, 1.0, steps=done[0] + 1, torcheck_error=message)
        return self.decide(False, 0.0, steps=done[0])
