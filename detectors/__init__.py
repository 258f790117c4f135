"""The recipe's checks, automated: one module per recipe stage."""
from recipebench.detectors.base import DETECTORS, Detector, Outcome, Verdict, register_detector

__all__ = ["DETECTORS", "Detector", "Outcome", "Verdict", "register_detector"]
