"""One recipe per method: the user-facing verbs."""

from tfsparse.methods.freezenet import freezenet, freezenet_optimizer, reinitialize, snip
from tfsparse.methods.jackpot import jackpot_optimizer, lottery_jackpot
from tfsparse.methods.magnitude import prune_low_magnitude

__all__ = ["freezenet", "freezenet_optimizer", "jackpot_optimizer", "lottery_jackpot", "prune_low_magnitude", "reinitialize", "snip"]
