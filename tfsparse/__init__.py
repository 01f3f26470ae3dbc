"""tfsparse: research-grade sparsity and compression for Keras 3."""

from tfsparse import callbacks, layers, models, schedules, scoring, surgery
from tfsparse.methods import freezenet, jackpot_optimizer, lottery_jackpot, prune_low_magnitude, snip
from tfsparse.surgery import strip
from tfsparse.summary import summary

strip_pruning = strip

__version__ = "0.1.0"

__all__ = ["callbacks", "freezenet", "jackpot_optimizer", "layers", "lottery_jackpot", "models", "prune_low_magnitude", "schedules", "scoring", "snip", "strip", "strip_pruning", "summary", "surgery"]
