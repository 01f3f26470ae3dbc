"""Keras callbacks for training sparse models."""

from tfsparse.callbacks.gate_monitor import GateMonitor, gate_statistics
from tfsparse.callbacks.pruning_summaries import PruningSummaries
from tfsparse.callbacks.short_restriction import ShortRestriction
from tfsparse.callbacks.update_pruning_step import UpdatePruningStep

__all__ = ["GateMonitor", "PruningSummaries", "ShortRestriction", "UpdatePruningStep", "gate_statistics"]
