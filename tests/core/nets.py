"""Registry-built networks narrowed to their classes, so tests call features(), blocks(), replace_head() typed.

`registry.build` returns a plain `nn.Module` (the name picks the class at run time); these check the class
that came back and return it as such.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from torch import nn

from ganft_core.models import registry
from ganft_core.models.conv_gan import ConvDiscriminator, ConvGenerator
from ganft_core.models.convnet import ConvNet
from ganft_core.models.dcgan import DCGANDiscriminator, DCGANGenerator
from ganft_core.models.mlp import MLP
from ganft_core.models.mlp_gan import MLPDiscriminator, MLPGenerator
from ganft_core.models.resnet import ResNet18

ImageClassifier = MLP | ConvNet | ResNet18  # the classifiers of images and feature vectors (not text)
Generator = DCGANGenerator | ConvGenerator | MLPGenerator
Discriminator = DCGANDiscriminator | ConvDiscriminator | MLPDiscriminator

M = TypeVar("M", bound=nn.Module)


def build_as(cls: type[M], name: str, args: Mapping[str, Any]) -> M:
    """`registry.build(name, args)`, checked to be a `cls`."""
    net = registry.build(name, args)
    assert isinstance(net, cls), f"{name} built a {type(net).__name__}, not a {cls.__name__}"
    return net


def classifier(name: str, args: Mapping[str, Any]) -> ImageClassifier:
    net = registry.build(name, args)
    assert isinstance(net, ImageClassifier), f"{name} built a {type(net).__name__}"
    return net


def generator(name: str, args: Mapping[str, Any]) -> Generator:
    net = registry.build(name, args)
    assert isinstance(net, Generator), f"{name} built a {type(net).__name__}"
    return net


def discriminator(name: str, args: Mapping[str, Any]) -> Discriminator:
    net = registry.build(name, args)
    assert isinstance(net, Discriminator), f"{name} built a {type(net).__name__}"
    return net
