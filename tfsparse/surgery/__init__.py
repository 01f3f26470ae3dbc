"""Graph surgery: rebuild models with layers wrapped, unwrapped or reshaped."""

from tfsparse.surgery.clone import copy_layer, transform_layers
from tfsparse.surgery.strip import strip

__all__ = ["copy_layer", "strip", "transform_layers"]
