"""tfsparse: research-grade sparsity and compression for Keras 3."""

from tfsparse import callbacks, layers, models, schedules, scoring, surgery
from tfsparse.methods import jackpot_optimizer, lottery_jackpot, prune_low_magnitude
from tfsparse.surgery import strip
from tfsparse.summary import summary

strip_pruning = strip

__version__ = "0.1.0"

__all__ = ["callbacks", "jackpot_optimizer", "layers", "lottery_jackpot", "models", "prune_low_magnitude", "schedules", "scoring", "strip", "strip_pruning", "summary", "surgery"]
