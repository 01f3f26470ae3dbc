"""Keras callbacks for training sparse models."""

from tfsparse.callbacks.pruning_summaries import PruningSummaries
from tfsparse.callbacks.short_restriction import ShortRestriction
from tfsparse.callbacks.update_pruning_step import UpdatePruningStep

__all__ = ["PruningSummaries", "ShortRestriction", "UpdatePruningStep"]
