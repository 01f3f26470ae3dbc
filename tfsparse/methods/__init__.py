"""One recipe per method: the user-facing verbs."""

from tfsparse.methods import csgd
from tfsparse.methods.csgd import csgd_prune
from tfsparse.methods.finetune import finetune, recalibrate_batch_norm
from tfsparse.methods.freezenet import freezenet, reinitialize, snip
from tfsparse.methods.hap import hap, implant
from tfsparse.methods.jackpot import lottery_jackpot
from tfsparse.methods.magnitude import prune_low_magnitude, prune_scope
from tfsparse.methods.polarization import polarize
from tfsparse.methods.structured import prune_channels

__all__ = [
    "csgd",
    "csgd_prune",
    "finetune",
    "freezenet",
    "hap",
    "implant",
    "lottery_jackpot",
    "polarize",
    "prune_channels",
    "prune_low_magnitude",
    "prune_scope",
    "recalibrate_batch_norm",
    "reinitialize",
    "snip",
]
