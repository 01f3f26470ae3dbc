"""tfsparse: research-grade sparsity and compression for Keras 3."""

from tfsparse import callbacks, data, export, layers, models, schedules, scoring, surgery
from tfsparse.methods import freezenet, jackpot_optimizer, lottery_jackpot, prune_low_magnitude, snip
from tfsparse.summary import summary
from tfsparse.surgery import strip

strip_pruning = strip

__version__ = "0.1.0"

__all__ = [
    "callbacks",
    "data",
    "export",
    "freezenet",
    "jackpot_optimizer",
    "layers",
    "lottery_jackpot",
    "models",
    "prune_low_magnitude",
    "schedules",
    "scoring",
    "snip",
    "strip",
    "strip_pruning",
    "summary",
    "surgery",
]
