"""Image classification data: tfds datasets when present, the embedded default otherwise.

`load` returns a batched `tf.data.Dataset` of `(image, label)` pairs, images
float32 in [0, 1] with shape `(height, width, channels)` and labels int32.
Nothing is ever downloaded: a dataset that is not on this machine raises an
error at once that says how to get it.

Sources, in order:
- `"digits"` (`DEFAULT`): scikit-learn's bundled 8x8 handwritten digits,
  1,797 images, always available. Split 80/20, stratified, with a fixed seed.
- any tfds dataset prepared locally (`tfds build NAME`), with image/label
  supervised keys. Fashion-MNIST prepared with tfds is read this way.
- `"fashion_mnist"` from the IDX files of Debian's `dataset-fashion-mnist`
  package (`FASHION_MNIST_DIR`) when tfds has not prepared it.
"""

import dataclasses
import functools
import gzip
import os
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from tfsparse import checks

DEFAULT = "digits"
FASHION_MNIST = "fashion_mnist"
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
ARRAY_SPLITS = ("train", "test")
DIGITS_TEST_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0
# Shuffle buffer for tfds datasets, which may not fit in memory; in-memory
# sources are shuffled in full.
TFDS_SHUFFLE_BUFFER = 10_000


@dataclasses.dataclass(frozen=True)
class _Source:
    """Where a dataset's examples come from.

    `examples(split, shuffle, seed)` returns `(dataset, count)`: an unbatched
    dataset of `(image, label)` with images as stored (divided by `max_value`
    they lie in [0, 1]) and the number of examples; it raises `KeyError` for a split the
    dataset does not have. `shuffle_buffer` is None for in-memory sources
    (shuffled in full).
    """

    input_shape: tuple
    num_classes: int
    max_value: float
    splits: tuple
    shuffle_buffer: int | None
    examples: Callable


def load(
    name=DEFAULT,
    split="train",
    batch_size=128,
    shuffle=None,
    image_size=None,
    seed=0,
    data_dir=None,
):
    """Loads an image classification dataset as batches, without downloading.

    Args:
        name: `"digits"` (the embedded default, `DEFAULT`), `"fashion_mnist"`
            or the name of any tfds dataset prepared locally.
        split: `"train"` or `"test"`; for tfds datasets any split the dataset
            has, including tfds slices such as `"train[:10%]"`.
        batch_size: examples per batch (the last batch may be smaller).
        shuffle: whether to shuffle the examples; defaults to True for
            `"train"` and False otherwise. The order is reproducible from
            `seed` (each pass over the dataset gets a new, seeded order).
        image_size: `None` to keep the stored size, or `(height, width)` to
            resize (bilinear), e.g. `(16, 16)` for LeNet-5-Caffe on digits.
        seed: shuffle seed.
        data_dir: tfds data directory; defaults to tfds' own default
            (`TFDS_DATA_DIR` or `~/tensorflow_datasets`).

    Returns:
        A prefetching `tf.data.Dataset` of `(images, labels)` batches: images
        float32 in [0, 1] of shape `(batch, height, width, channels)`, labels
        int32 of shape `(batch,)`.

    Raises:
        ValueError: for an unknown dataset, a split it does not have, or a
            bad `batch_size`, `image_size` or `shuffle`.
        TypeError: if `name` or `split` is not a string.
        FileNotFoundError: for a known dataset that is not on this machine;
            the message says how to get it.

    Example:

    >>> train = tfsparse.data.load("digits", "train", batch_size=64)
    >>> images, labels = next(iter(train))
    >>> images.shape, labels.dtype
    (TensorShape([64, 8, 8, 1]), tf.int32)
    """
    batch_size = checks.check_positive_int(batch_size, "batch_size")
    seed = None if seed is None else checks.check_seed(seed)
    if shuffle is not None and not isinstance(shuffle, bool):
        raise ValueError(f"Argument `shuffle` must be None, True or False, received: {shuffle!r}.")
    image_size = _check_image_size(image_size)
    if not isinstance(split, str):
        raise TypeError(f"Argument `split` must be a split name (a string), received: {split!r}.")
    source = _source(name, data_dir)
    if None in source.input_shape and image_size is None:
        raise ValueError(
            f"Dataset {name!r} has images of varying size {source.input_shape}: pass "
            f"`image_size=(height, width)` to resize them."
        )
    if shuffle is None:
        shuffle = split == "train"
    try:
        dataset, count = source.examples(split, shuffle, seed)
    except KeyError as error:
        raise ValueError(
            f"Argument `split` must be one of {source.splits} for dataset {name!r}, received: {split!r}."
        ) from error
    if shuffle:
        buffer = count if source.shuffle_buffer is None else min(count, source.shuffle_buffer)
        dataset = dataset.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)

    def prepare(images, labels):
        images = tf.cast(images, tf.float32) / source.max_value
        if image_size is not None:
            images = tf.image.resize(images, image_size)
        return images, tf.cast(labels, tf.int32)

    # Images of one fixed size are prepared a batch at a time (much faster);
    # images of varying sizes are resized one by one before batching.
    if None in source.input_shape:
        dataset = dataset.map(prepare, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size)
    else:
        dataset = dataset.batch(batch_size).map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)


def describe(name=DEFAULT, image_size=None, data_dir=None):
    """Returns a dataset's input shape and number of classes, without loading it.

    Args:
        name: as for `load`.
        image_size: as for `load`: `(height, width)` replaces the stored size.
        data_dir: as for `load`.

    Returns:
        `(input_shape, num_classes)`, e.g. `((8, 8, 1), 10)` for digits.

    Raises:
        ValueError, TypeError, FileNotFoundError: as `load`.

    Example:

    >>> shape, classes = tfsparse.data.describe("digits", image_size=(16, 16))
    >>> shape, classes
    ((16, 16, 1), 10)
    >>> model = tfsparse.models.lenet5_caffe(shape, classes)
    """
    image_size = _check_image_size(image_size)
    source = _source(name, data_dir)
    shape = source.input_shape
    if image_size is not None:
        shape = (*image_size, shape[2])
    return tuple(shape), source.num_classes


def _check_image_size(image_size):
    if image_size is None:
        return None
    if (
        not isinstance(image_size, (tuple, list))
        or len(image_size) != 2
        or not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s > 0 for s in image_size)
    ):
        raise ValueError(
            f"Argument `image_size` must be None or (height, width) with positive integers, "
            f"received: {image_size!r}."
        )
    return tuple(int(s) for s in image_size)


def _source(name, data_dir):
    if not isinstance(name, str):
        raise TypeError(f"Argument `name` must be a dataset name (a string), received: {name!r}.")
    if name == DEFAULT:
        return _Source((8, 8, 1), 10, 16.0, ARRAY_SPLITS, None, _array_examples(_digits))
    # Importing tfds is slow; it is only needed past the embedded default.
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except ValueError:  # tfds' DatasetNotFoundError is a ValueError
        raise ValueError(
            f"Argument `name` must be {DEFAULT!r}, {FASHION_MNIST!r} or a tfds dataset, "
            f"received: {name!r}, which tfds does not know. The embedded default "
            f"{DEFAULT!r} is always available."
        ) from None  # tfds' own message lists every dataset it knows
    if builder.is_prepared():
        return _tfds_source(builder, name)
    if name == FASHION_MNIST and _fashion_mnist_files_present():
        return _Source((28, 28, 1), 10, 255.0, ARRAY_SPLITS, None, _array_examples(_fashion_mnist))
    how = f"`tfds build {name}` on a machine with internet access and copy the result to {builder.data_dir!r}"
    if name == FASHION_MNIST:
        how = (
            f"`apt-get install dataset-fashion-mnist` (IDX files in {FASHION_MNIST_DIR}), "
            f"or {how}"
        )
    raise FileNotFoundError(
        f"Dataset {name!r} is not on this machine and is never downloaded here: it is not "
        f"prepared in the tfds data directory {builder.data_dir!r}. To get it: {how}. "
        f"The embedded default {DEFAULT!r} is always available."
    )


def _tfds_examples(builder, image_key, label_key):
    """`examples` for a prepared tfds dataset."""
    import tensorflow_datasets as tfds

    def examples(split, shuffle, seed):
        try:
            count = builder.info.splits[split].num_examples
        except (ValueError, TypeError, AssertionError) as error:  # a malformed slice
            raise KeyError(split) from error
        dataset = builder.as_dataset(
            split=split, shuffle_files=shuffle, read_config=tfds.ReadConfig(shuffle_seed=seed)
        )
        return dataset.map(lambda example: (example[image_key], example[label_key])), count

    return examples


def _tfds_source(builder, name):
    info = builder.info
    keys = info.supervised_keys
    label = info.features[keys[1]] if keys and len(keys) == 2 else None
    image = info.features[keys[0]] if label is not None else None
    if label is None or not hasattr(label, "num_classes") or len(getattr(image, "shape", ())) != 3:
        raise ValueError(
            f"Argument `name` must be an image classification dataset (supervised keys: a "
            f"(height, width, channels) image and a class label), received: {name!r} with "
            f"supervised keys {keys!r}."
        )
    max_value = 255.0 if image.dtype == np.uint8 else 1.0
    return _Source(
        tuple(image.shape),
        label.num_classes,
        max_value,
        tuple(info.splits),
        TFDS_SHUFFLE_BUFFER,
        _tfds_examples(builder, *keys),
    )


def _array_examples(arrays):
    """`examples` for an in-memory source: `arrays(split)` -> (images, labels)."""

    def examples(split, shuffle, seed):
        images, labels = arrays(split)
        return tf.data.Dataset.from_tensor_slices((images, labels)), len(labels)

    return examples


@functools.lru_cache(maxsize=None)
def _digits_splits():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = digits.images.astype(np.uint8)[..., None]
    labels = digits.target.astype(np.int32)
    train_x, test_x, train_y, test_y = train_test_split(
        images, labels, test_size=DIGITS_TEST_FRACTION, random_state=DIGITS_SPLIT_SEED, stratify=labels
    )
    return {"train": (train_x, train_y), "test": (test_x, test_y)}


def _digits(split):
    return _digits_splits()[split]


def _fashion_mnist_files_present():
    return all(
        os.path.isfile(os.path.join(FASHION_MNIST_DIR, f)) for files in FASHION_MNIST_FILES.values() for f in files
    )


@functools.lru_cache(maxsize=None)
def _fashion_mnist(split):
    files = FASHION_MNIST_FILES[split]
    image_file, label_file = (os.path.join(FASHION_MNIST_DIR, f) for f in files)
    images, labels = read_idx(image_file), read_idx(label_file)
    if images.ndim != 3 or labels.shape != images.shape[:1]:
        raise ValueError(
            f"Fashion-MNIST files {image_file!r} and {label_file!r} do not match: images "
            f"{images.shape}, labels {labels.shape}."
        )
    return images[..., None], labels.astype(np.int32)


def read_idx(path):
    """Reads an IDX file of unsigned bytes (the MNIST format), gzipped or not.

    Args:
        path: path of a `.gz` or plain IDX file.

    Returns:
        A uint8 NumPy array of the shape stored in the file.

    Raises:
        ValueError: if the file is not an IDX file of unsigned bytes or is
            truncated.

    Example:

    >>> labels = read_idx("/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz")
    >>> labels.shape
    (10000,)
    """
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    # Header: two zero bytes, a type code (0x08 = unsigned byte), the number
    # of dimensions, then each dimension as a big-endian int32.
    if len(data) < 4 or data[:3] != b"\x00\x00\x08" or data[3] == 0:
        raise ValueError(f"File {path!r} is not an IDX file of unsigned bytes (header {data[:4]!r}).")
    ndim = data[3]
    shape = tuple(np.frombuffer(data, ">i4", count=ndim, offset=4))
    offset = 4 + 4 * ndim
    if len(data) - offset != int(np.prod(shape)):
        raise ValueError(
            f"File {path!r} is truncated or damaged: header shape {shape} needs "
            f"{int(np.prod(shape))} bytes, found {len(data) - offset}."
        )
    return np.frombuffer(data, np.uint8, offset=offset).reshape(shape)
