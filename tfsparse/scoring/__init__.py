"""Saliency criteria and the masks they select."""

from tfsparse.scoring.magnitude import block_mask, global_topk_masks, m_by_n_mask, topk_mask
from tfsparse.scoring.saliency import snip_saliency

__all__ = ["block_mask", "global_topk_masks", "m_by_n_mask", "snip_saliency", "topk_mask"]
