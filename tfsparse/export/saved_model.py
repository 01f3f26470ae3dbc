"""SavedModel export of a model with its tfsparse wrappers stripped."""

import os

from tfsparse.checks import check_model
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
