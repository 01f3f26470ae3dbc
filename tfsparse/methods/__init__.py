"""One recipe per method: the user-facing verbs."""

from tfsparse.methods.magnitude import prune_low_magnitude

__all__ = ["prune_low_magnitude"]
