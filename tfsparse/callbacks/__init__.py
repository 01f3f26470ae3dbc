"""Keras callbacks for training sparse models."""

from tfsparse.callbacks.cluster_monitor import ClusterMonitor
from tfsparse.callbacks.gate_monitor import GateMonitor, gate_consensus, gate_statistics
from tfsparse.callbacks.pruning_summaries import PruningSummaries
from tfsparse.callbacks.short_restriction import ShortRestriction
from tfsparse.callbacks.update_pruning_step import UpdatePruningStep

__all__ = [
    "ClusterMonitor",
    "GateMonitor",
    "PruningSummaries",
    "ShortRestriction",
    "UpdatePruningStep",
    "gate_consensus",
    "gate_statistics",
]
