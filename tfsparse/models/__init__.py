"""Reference models used by the papers, the benchmarks and the tests."""

from tfsparse.models.lenet import lenet5_caffe, lenet_300_100
from tfsparse.models.mobilenet import mobilenet_v2_small
from tfsparse.models.resnet import resnet20, resnet56, resnet_cifar
from tfsparse.models.vgg import vgg

__all__ = ["lenet5_caffe", "lenet_300_100", "mobilenet_v2_small", "resnet20", "resnet56", "resnet_cifar", "vgg"]
