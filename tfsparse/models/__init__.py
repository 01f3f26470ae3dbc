"""Reference models used by the papers, the benchmarks and the tests."""

from tfsparse.models.lenet import lenet5_caffe, lenet_300_100

__all__ = ["lenet5_caffe", "lenet_300_100"]
