"""Reference packages that import torchvision, imported without it.

PyPI's torchvision does not import beside the pinned CPU torch 2.13.0, yet `lpips` and
`pytorch-fid` import it at module level. `import_without_torchvision` puts a stand-in
`torchvision` into `sys.modules` only for the duration of the import and removes it afterwards
(transformers and diffusers probe for torchvision too, so it must not linger).

The stand-in provides only what those packages touch, written here from the published
architectures (torchvision's layouts and names), randomly initialised:
- `models.alexnet` / `models.vgg16`, whose `.features` are the convolutional trunks (Krizhevsky's
  one-GPU AlexNet; VGG16 configuration D);
- `models.inception`: Inception-v3's `BasicConv2d` (conv without bias, batch norm ε 1e-3, ReLU),
  blocks A-E and `Inception3` holding the named stem units and Mixed blocks (Szegedy et al.
  2016). pytorch-fid subclasses A, C and E and replaces their `forward` with its TF-compatible
  ones, so only B and D need one here.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import sys
import types

import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

# VGG16 (configuration D): channels per 3x3 conv, "M" a 2x2 max pool.
VGG16_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)


def alexnet_features() -> nn.Sequential:
    """AlexNet's convolutional trunk; indices as torchvision's `alexnet().features`."""
    return nn.Sequential(
        nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(64, 192, kernel_size=5, padding=2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(192, 384, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(384, 256, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(256, 256, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
    )


def vgg16_features() -> nn.Sequential:
    """VGG16's convolutional trunk; indices as torchvision's `vgg16().features`."""
    layers, channels = [], 3
    for entry in (*VGG16_LAYOUT, "M"):
        if entry == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(channels, entry, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            channels = entry
    return nn.Sequential(*layers)


class BasicConv2d(nn.Module):
    def __init__(self, in_channels, out_channels, **conv_args):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, bias=False, **conv_args)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x):
        return torch.relu(self.bn(self.conv(x)))


class InceptionA(nn.Module):
    def __init__(self, in_channels, pool_features):
        super().__init__()
        self.branch1x1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch5x5_1 = BasicConv2d(in_channels, 48, kernel_size=1)
        self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
        self.branch_pool = BasicConv2d(in_channels, pool_features, kernel_size=1)


class InceptionB(nn.Module):
    def __init__(self, in_channels):
        super().__init__()
        self.branch3x3 = BasicConv2d(in_channels, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

    def forward(self, x):
        double = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        pooled = torch.nn.functional.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([self.branch3x3(x), double, pooled], 1)


class InceptionC(nn.Module):
    def __init__(self, in_channels, channels_7x7):
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch7x7_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)


class InceptionD(nn.Module):
    def __init__(self, in_channels):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

    def forward(self, x):
        three = self.branch3x3_2(self.branch3x3_1(x))
        seven = x
        for unit in (self.branch7x7x3_1, self.branch7x7x3_2, self.branch7x7x3_3):
            seven = unit(seven)
        seven = self.branch7x7x3_4(seven)
        pooled = torch.nn.functional.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([three, seven, pooled], 1)


class InceptionE(nn.Module):
    def __init__(self, in_channels):
        super().__init__()
        self.branch1x1 = BasicConv2d(in_channels, 320, kernel_size=1)
        self.branch3x3_1 = BasicConv2d(in_channels, 384, kernel_size=1)
        self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 448, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)


class Inception3(nn.Module):
    """The named stem units and Mixed blocks pytorch-fid reads (no forward of its own is used)."""

    def __init__(self, num_classes=1000, **_):
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
        self.Mixed_5b = InceptionA(192, pool_features=32)
        self.Mixed_5c = InceptionA(256, pool_features=64)
        self.Mixed_5d = InceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, channels_7x7=128)
        self.Mixed_6c = InceptionC(768, channels_7x7=160)
        self.Mixed_6d = InceptionC(768, channels_7x7=160)
        self.Mixed_6e = InceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280)
        self.Mixed_7c = InceptionE(2048)
        self.fc = nn.Linear(2048, num_classes)


def _torchvision_stand_in() -> dict[str, types.ModuleType]:
    root = types.ModuleType("torchvision")
    root.__version__ = "0.0"
    models = types.ModuleType("torchvision.models")
    models.alexnet = lambda pretrained=False, **_: types.SimpleNamespace(
        features=alexnet_features()
    )
    models.vgg16 = lambda pretrained=False, **_: types.SimpleNamespace(features=vgg16_features())
    inception = types.ModuleType("torchvision.models.inception")
    for block in (BasicConv2d, InceptionA, InceptionB, InceptionC, InceptionD, InceptionE):
        setattr(inception, block.__name__, block)
    inception.Inception3 = Inception3
    models.inception = inception
    models.inception_v3 = lambda **kwargs: Inception3(**kwargs)
    transforms = types.ModuleType("torchvision.transforms")
    root.models, root.transforms = models, transforms
    return {
        "torchvision": root,
        "torchvision.models": models,
        "torchvision.models.inception": inception,
        "torchvision.transforms": transforms,
    }


@contextlib.contextmanager
def _stand_in_modules():
    stand_ins = _torchvision_stand_in()
    if any(name in sys.modules for name in stand_ins):
        raise RuntimeError("a torchvision module is already imported; the stand-in would shadow it")
    sys.modules.update(stand_ins)
    try:
        yield
    finally:
        for name in stand_ins:
            sys.modules.pop(name, None)


def import_without_torchvision(module_name: str):
    """Import `module_name` (skipping the test if it is not installed) with the stand-in."""
    if importlib.util.find_spec(module_name.split(".")[0]) is None:
        pytest.skip(f"{module_name} is not installed (the `test` extra)")
    if module_name in sys.modules:
        return sys.modules[module_name]
    with _stand_in_modules():
        return importlib.import_module(module_name)


@pytest.fixture(scope="session")
def lpips_package():
    return import_without_torchvision("lpips")


@pytest.fixture(scope="session")
def pytorch_fid_score():
    return import_without_torchvision("pytorch_fid.fid_score")


@pytest.fixture(scope="session")
def pytorch_fid_inception():
    return import_without_torchvision("pytorch_fid.inception")
