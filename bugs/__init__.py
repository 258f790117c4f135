"""The catalog of silent training bugs: one module per family (data, model, loss, optim)."""
from recipebench.bugs.base import BUGS, Bug, register_bug

__all__ = ["BUGS", "Bug", "register_bug"]
