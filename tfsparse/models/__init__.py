"""Reference models used by the papers, the benchmarks and the tests."""

from tfsparse.models.lenet import lenet5_caffe, lenet_300_100
from tfsparse.models.vgg import vgg

__all__ = ["lenet5_caffe", "lenet_300_100", "vgg"]
