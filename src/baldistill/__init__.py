"""BalDistill: multi-stage balanced distillation of a black-box teacher into a small student."""

__version__ = "0.1.0"
