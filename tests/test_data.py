"""tfsparse.data: the embedded digits, Fashion-MNIST IDX files, local tfds datasets, errors."""

import gzip
import math
import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from sklearn.datasets import load_digits

import tfsparse
from tfsparse import data


def _arrays(dataset):
    images, labels = zip(*((x.numpy(), y.numpy()) for x, y in dataset))
    return np.concatenate(images), np.concatenate(labels)


def _rows(images, labels):
    """Examples as sortable byte strings (image and label), for multiset comparisons."""
    return sorted(img.tobytes() + lab.tobytes() for img, lab in zip(images, labels.astype(np.int64)))


def test_digits_is_the_default_and_splits_the_bundled_data_exactly():
    assert data.DEFAULT == "digits"
    train_x, train_y = _arrays(data.load(split="train", batch_size=100))
    test_x, test_y = _arrays(data.load(split="test", batch_size=100))
    for x, y in ((train_x, train_y), (test_x, test_y)):
        assert x.dtype == np.float32 and y.dtype == np.int32
        assert x.shape[1:] == (8, 8, 1) and x.min() == 0.0 and x.max() == 1.0
        np.testing.assert_array_equal(x * 16, np.round(x * 16))  # the stored values /16, exactly
    digits = load_digits()
    assert len(test_y) == math.ceil(data.DIGITS_TEST_FRACTION * len(digits.target))
    # Train and test together are exactly the bundled data: disjoint and complete.
    together = _rows(np.concatenate([train_x, test_x]) * 16, np.concatenate([train_y, test_y]))
    bundled = _rows(digits.images[..., None].astype(np.float32), digits.target)
    assert together == bundled
    # Stratified: each class is in the test split in proportion.
    for label in range(10):
        share = data.DIGITS_TEST_FRACTION * np.sum(digits.target == label)
        assert abs(np.sum(test_y == label) - share) <= 1


def test_shuffling_is_seeded_reshuffles_each_epoch_and_defaults_by_split():
    order = lambda ds: _arrays(ds)[1]  # noqa: E731
    first = data.load("digits", "train", batch_size=64)
    again = data.load("digits", "train", batch_size=64)
    epoch1, epoch2 = order(first), order(first)
    np.testing.assert_array_equal(epoch1, order(again))
    assert not np.array_equal(epoch1, epoch2)
    np.testing.assert_array_equal(np.sort(epoch1), np.sort(epoch2))
    assert not np.array_equal(epoch1, order(data.load("digits", "train", batch_size=64, seed=1)))
    unshuffled = order(data.load("digits", "train", batch_size=64, shuffle=False))
    assert not np.array_equal(epoch1, unshuffled)
    # The test split is not shuffled by default.
    np.testing.assert_array_equal(order(data.load("digits", "test")), order(data.load("digits", "test", shuffle=False)))
    assert not np.array_equal(order(data.load("digits", "test")), order(data.load("digits", "test", shuffle=True)))


def test_batches_have_the_requested_size():
    sizes = [int(y.shape[0]) for _, y in data.load("digits", "test", batch_size=50)]
    total = sum(sizes)
    assert sizes == [50] * (total // 50) + ([total % 50] if total % 50 else [])


def test_image_size_resizes_for_lenet5_caffe():
    small = _arrays(data.load("digits", "test", shuffle=False))[0]
    large, labels = _arrays(data.load("digits", "test", shuffle=False, image_size=(16, 16)))
    np.testing.assert_allclose(large, tf.image.resize(small, (16, 16)).numpy(), atol=1e-6)
    assert 0.0 <= large.min() and large.max() <= 1.0
    shape, classes = data.describe("digits", image_size=(16, 16))
    assert (shape, classes) == ((16, 16, 1), 10) == (large.shape[1:], labels.max() + 1)
    model = tfsparse.models.lenet5_caffe(shape, classes)
    assert model(large[:4]).shape == (4, classes)
    assert data.describe() == ((8, 8, 1), 10)


def test_fashion_mnist_from_the_debian_idx_files(tmp_path):
    # An empty tfds data directory: the IDX files are the only source.
    shape, classes = data.describe("fashion_mnist", data_dir=str(tmp_path))
    assert (shape, classes) == ((28, 28, 1), 10)
    test = data.load("fashion_mnist", "test", batch_size=1000, data_dir=str(tmp_path))
    test_x, test_y = _arrays(test)
    train_y = np.concatenate([y.numpy() for _, y in data.load("fashion_mnist", batch_size=5000, data_dir=str(tmp_path))])
    assert (len(train_y), len(test_y)) == (60000, 10000)
    assert test_x.shape[1:] == shape and 0.0 <= test_x.min() and test_x.max() <= 1.0
    assert set(np.unique(train_y)) == set(np.unique(test_y)) == set(range(classes))
    stored = data.read_idx(os.path.join(data.FASHION_MNIST_DIR, "t10k-images-idx3-ubyte.gz"))
    np.testing.assert_array_equal(test_x[..., 0], stored.astype(np.float32) / 255.0)
    np.testing.assert_array_equal(test_y, data.read_idx(os.path.join(data.FASHION_MNIST_DIR, "t10k-labels-idx1-ubyte.gz")))


def test_read_idx_rejects_damaged_files(tmp_path):
    good = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    header = b"\x00\x00\x08\x03" + np.array([2, 3, 4], ">i4").tobytes()
    path = tmp_path / "good-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(header + good.tobytes()))
    np.testing.assert_array_equal(data.read_idx(path), good)
    truncated = tmp_path / "truncated-idx3-ubyte"
    truncated.write_bytes(header + good.tobytes()[:-1])
    with pytest.raises(ValueError, match="truncated"):
        data.read_idx(truncated)
    wrong_type = tmp_path / "float-idx3-ubyte"
    wrong_type.write_bytes(b"\x00\x00\x0d\x03" + header[4:] + good.astype(np.float32).tobytes())
    with pytest.raises(ValueError, match="not an IDX file of unsigned bytes"):
        data.read_idx(wrong_type)


class TfsparseTinyImages(tfds.core.GeneratorBasedBuilder):
    """A tiny tfds image dataset, prepared locally without any download."""

    VERSION = tfds.core.Version("1.0.0")
    SIZES = {"train": 30, "test": 9}

    def _info(self):
        features = tfds.features.FeaturesDict(
            {"image": tfds.features.Image(shape=(12, 12, 3)), "label": tfds.features.ClassLabel(num_classes=3)}
        )
        return tfds.core.DatasetInfo(builder=self, features=features, supervised_keys=("image", "label"))

    def _split_generators(self, dl_manager):
        return {split: self._generate_examples(split) for split in self.SIZES}

    def _generate_examples(self, split):
        images, labels = tiny_examples(split)
        for i, (image, label) in enumerate(zip(images, labels)):
            yield i, {"image": image, "label": int(label)}


def tiny_examples(split):
    rng = np.random.default_rng(list(TfsparseTinyImages.SIZES).index(split))
    n = TfsparseTinyImages.SIZES[split]
    return rng.integers(0, 256, (n, 12, 12, 3), dtype=np.uint8), np.arange(n) % 3


@pytest.fixture(scope="module")
def tiny_tfds_dir(tmp_path_factory):
    data_dir = str(tmp_path_factory.mktemp("tfds"))
    TfsparseTinyImages(data_dir=data_dir).download_and_prepare()
    return data_dir


def test_any_prepared_tfds_dataset_loads(tiny_tfds_dir):
    name = "tfsparse_tiny_images"
    assert data.describe(name, data_dir=tiny_tfds_dir) == ((12, 12, 3), 3)
    for split in ("train", "test"):
        x, y = _arrays(data.load(name, split, batch_size=4, data_dir=tiny_tfds_dir))
        assert x.dtype == np.float32 and y.dtype == np.int32
        images, labels = tiny_examples(split)
        assert _rows(x, y) == _rows(images.astype(np.float32) / 255.0, labels.astype(np.int32))
    part = _arrays(data.load(name, "train[:10]", batch_size=4, data_dir=tiny_tfds_dir))[1]
    assert len(part) == 10
    resized = _arrays(data.load(name, "test", image_size=(8, 8), data_dir=tiny_tfds_dir))[0]
    assert resized.shape == (9, 8, 8, 3)
    with pytest.raises(ValueError, match=r"Argument `split` must be one of \('train', 'test'\).*'validation'"):
        data.load(name, "validation", data_dir=tiny_tfds_dir)


def test_unprepared_tfds_dataset_fails_without_downloading(tmp_path, monkeypatch):
    def no_download(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", no_download)
    monkeypatch.setattr(tfds.download.DownloadManager, "download", no_download)
    for call in (data.load, data.describe):
        with pytest.raises(FileNotFoundError, match=r"Dataset 'mnist' is not on this machine.*tfds build mnist.*'digits'"):
            call("mnist", data_dir=str(tmp_path))


def test_missing_fashion_mnist_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "FASHION_MNIST_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist.*tfds build fashion_mnist"):
        data.load("fashion_mnist", data_dir=str(tmp_path))


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(name="no_such_dataset"), ValueError, r"Argument `name`.*'no_such_dataset'.*'digits' is always available"),
        (dict(name=7), TypeError, r"Argument `name`.*7"),
        (dict(split="validation"), ValueError, r"Argument `split` must be one of \('train', 'test'\).*'validation'"),
        (dict(split=0), TypeError, r"Argument `split`.*0"),
        (dict(batch_size=0), ValueError, r"Argument `batch_size` must be a positive integer.*0"),
        (dict(batch_size=2.5), ValueError, r"Argument `batch_size` must be a positive integer.*2.5"),
        (dict(batch_size=True), ValueError, r"Argument `batch_size` must be a positive integer.*True"),
        (dict(image_size=(16,)), ValueError, r"Argument `image_size`.*\(16,\)"),
        (dict(image_size=(16, 0)), ValueError, r"Argument `image_size`.*\(16, 0\)"),
        (dict(shuffle="yes"), ValueError, r"Argument `shuffle`.*'yes'"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, error, message):
    with pytest.raises(error, match=message):
        data.load(**kwargs)
