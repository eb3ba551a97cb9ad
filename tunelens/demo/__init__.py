"""The demo: the seed's lessons end to end on the embedded model (see tunelens.demo.run)."""

from tunelens.demo.config import DemoConfig, quick, study
from tunelens.demo.run import DemoResult, run_demo

__all__ = ["DemoConfig", "DemoResult", "quick", "run_demo", "study"]
