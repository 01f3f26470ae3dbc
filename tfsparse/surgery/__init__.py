"""Graph surgery: rebuild models with layers wrapped, unwrapped or reshaped."""

from tfsparse.surgery.clone import copy_layer, transform_layers
from tfsparse.surgery.cost import RemovalCost
from tfsparse.surgery.graph import ChannelGroup, WeightSlice, dependency_groups
from tfsparse.surgery.merge import merge_channels
from tfsparse.surgery.remove import remove_channels
from tfsparse.surgery.replace import remove_blocks, replace_layer, replace_layers, residual_blocks
from tfsparse.surgery.strip import strip
from tfsparse.surgery.unwrap import unwrap_layers

__all__ = [
    "ChannelGroup", "RemovalCost", "WeightSlice", "copy_layer", "dependency_groups", "merge_channels", "remove_blocks",
    "remove_channels", "replace_layer", "replace_layers", "residual_blocks", "strip", "transform_layers",
    "unwrap_layers",
]
