"""Saliency criteria and the masks they select."""

from tfsparse.scoring.magnitude import block_mask, global_topk_masks, m_by_n_mask, topk_mask
from tfsparse.scoring.snip import prunable_weights, snip

__all__ = ["block_mask", "global_topk_masks", "m_by_n_mask", "prunable_weights", "snip", "topk_mask"]
