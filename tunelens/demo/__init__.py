"""The demo: the case study's lessons end to end on an embedded model (the stage is tunelens.demo.run).

May import every stage below it and tunelens.studies (it runs the few-shot study). This module stays
light: the command reads DemoConfig's options from it without importing the stages.
"""

from tunelens.demo.config import DemoConfig, quick, study

__all__ = ["DemoConfig", "quick", "study"]
