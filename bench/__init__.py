"""bench: a benchmark suite for adversarial training on class-imbalanced data."""

__version__ = "0.1.0"
