"""tfsparse: research-grade sparsity and compression for Keras 3."""

from tfsparse import native_logs

native_logs.silence_for_command()  # before anything imports TensorFlow

from tfsparse import (  # noqa: E402
    callbacks, data, distribute, export, layers, models, optimizers, registry, schedules, scoring, surgery, tfmot,
    walk)
from tfsparse.methods import (
    csgd,
    csgd_prune,
    finetune,
    freezenet,
    hap,
    lottery_jackpot,
    polarize,
    prune_channels,
    prune_low_magnitude,
    prune_scope,
    recalibrate_batch_norm,
    reinitialize,
    snip,
)
from tfsparse.model_summary import summary
from tfsparse.registry import register_layer
from tfsparse.surgery import strip

strip_pruning = strip

__version__ = "0.1.0"

__all__ = [
    "callbacks",
    "csgd",
    "csgd_prune",
    "data",
    "distribute",
    "export",
    "finetune",
    "freezenet",
    "hap",
    "layers",
    "lottery_jackpot",
    "models",
    "polarize",
    "optimizers",
    "prune_channels",
    "prune_low_magnitude",
    "prune_scope",
    "recalibrate_batch_norm",
    "register_layer",
    "registry",
    "reinitialize",
    "schedules",
    "scoring",
    "snip",
    "strip",
    "strip_pruning",
    "summary",
    "surgery",
    "tfmot",
    "walk",
]
