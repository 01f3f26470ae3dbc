"""SavedModel export of a model with its tfsparse wrappers stripped."""

import os

import keras

from tfsparse.checks import check_built
from tfsparse.surgery.strip import strip


def saved_model(model, path):
    """Exports a model as a TensorFlow SavedModel for inference.

    The tfsparse wrappers are stripped first (`tfsparse.strip`), so the
    SavedModel holds plain Keras layers with the effective weights and
    loads without tfsparse. Keras' own `model.export` writes it, with a
    `serve` endpoint (also the default serving signature).

    Args:
        model: a built Keras model, possibly holding tfsparse wrappers.
        path: directory to write.

    Returns:
        `path`.

    Raises:
        TypeError: if `model` is not a Keras model or `path` is not a path.
        ValueError: if `model` is not built.

    Example:

    >>> pruned = tfsparse.prune_low_magnitude(model)
    >>> path = tfsparse.export.saved_model(pruned, "pruned_savedmodel")
    >>> reloaded = tf.saved_model.load(path)
    >>> logits = reloaded.serve(x)
    >>> bool(np.allclose(logits, pruned.predict(x, verbose=0), atol=1e-6))
    True
    """
    check_model(model)
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"Argument `path` must be a str or os.PathLike, received: {path!r}.")
    strip(model).export(path, verbose=False)
    return path


def check_model(model):
    """Raises a clear error unless `model` is a built Keras model."""
    if not isinstance(model, keras.Model):
        raise TypeError(f"Argument `model` must be a keras.Model, received: {type(model).__name__}.")
    check_built(model)
