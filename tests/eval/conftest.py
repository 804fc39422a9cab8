"""Reference packages that import torchvision, imported without it.

PyPI's torchvision does not import beside the pinned CPU torch 2.13.0, yet `lpips` and
`pytorch-fid` import it at module level. `import_without_torchvision` puts a stand-in
`torchvision` into `sys.modules` only for the duration of the import and removes it afterwards
(transformers and diffusers probe for torchvision too, so it must not linger). The stand-in
provides only what those imports touch: `models.alexnet` / `models.vgg16`, whose `.features` are
built here from torch.nn layers after the published architectures (Krizhevsky's one-GPU AlexNet
as in torchvision; VGG16 configuration D), randomly initialised, and placeholder base classes
for pytorch-fid's Inception blocks, which the tests never build.
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


def _torchvision_stand_in() -> dict[str, types.ModuleType]:
    root = types.ModuleType("torchvision")
    root.__version__ = "0.0"
    models = types.ModuleType("torchvision.models")
    models.alexnet = lambda pretrained=False, **_: types.SimpleNamespace(
        features=alexnet_features()
    )
    models.vgg16 = lambda pretrained=False, **_: types.SimpleNamespace(features=vgg16_features())
    inception = types.ModuleType("torchvision.models.inception")
    for name in ("InceptionA", "InceptionC", "InceptionE"):
        setattr(inception, name, type(name, (nn.Module,), {}))
    models.inception = inception
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
