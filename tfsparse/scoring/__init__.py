"""Saliency criteria and the masks they select; channel importance criteria; Hessian traces."""

from tfsparse.scoring.channel_criteria import L1, L2, BNScale, HessianTrace, Taylor
from tfsparse.scoring.channel_importance import ChannelImportance
from tfsparse.scoring.hessian import TraceEstimate, hessian_trace
from tfsparse.scoring.magnitude import block_mask, global_topk_masks, m_by_n_mask, topk_mask
from tfsparse.scoring.saliency import mean_gradients, snip_saliency

__all__ = [
    "BNScale", "ChannelImportance", "HessianTrace", "L1", "L2", "Taylor", "TraceEstimate", "block_mask",
    "global_topk_masks", "hessian_trace", "m_by_n_mask", "mean_gradients", "snip_saliency", "topk_mask",
]
