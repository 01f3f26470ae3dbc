"""Optimizers and gradient transforms."""

from tfsparse.optimizers.cosine_sgd import cosine_sgd

__all__ = ["cosine_sgd"]
