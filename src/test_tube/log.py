"""The module path test-tube 0.7.5 users import from: ``from test_tube.log import Experiment``."""

from ._experiment import Experiment

__all__ = ["Experiment"]
