"""Export: wrappers stripped, then SavedModel or TFLite (checked with LiteRT)."""

from tfsparse.export.compact import CompactFileError, load_compact, save_compact
from tfsparse.export.saved_model import saved_model
from tfsparse.export.tflite import QUANTIZE_MODES, TFLiteReport, tflite

__all__ = ["CompactFileError", "QUANTIZE_MODES", "TFLiteReport", "load_compact", "save_compact", "saved_model", "tflite"]
