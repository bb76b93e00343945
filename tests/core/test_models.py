"""Architecture registry and networks: argument checking, interfaces, key compatibility."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from torch import nn

from ganft_core.errors import ModelError
from ganft_core.models import registry
from ganft_core.models.dcgan import DCGANDiscriminator, DCGANGenerator
from ganft_core.models.layers import data_normalization
from ganft_core.models.mlp import MLP
from ganft_core.models.resnet import ResNet18
from tests.core.nets import build_as, classifier, discriminator, generator

# torchvision.models.resnet18().state_dict(): (key, shape) in order. Written out, not imported:
# torchvision is not a dependency.
TORCHVISION_RESNET18 = [
    ("conv1.weight", (64, 3, 7, 7)),
    ("bn1.weight", (64,)),
    ("bn1.bias", (64,)),
    ("bn1.running_mean", (64,)),
    ("bn1.running_var", (64,)),
    ("bn1.num_batches_tracked", ()),
    ("layer1.0.conv1.weight", (64, 64, 3, 3)),
    ("layer1.0.bn1.weight", (64,)),
    ("layer1.0.bn1.bias", (64,)),
    ("layer1.0.bn1.running_mean", (64,)),
    ("layer1.0.bn1.running_var", (64,)),
    ("layer1.0.bn1.num_batches_tracked", ()),
    ("layer1.0.conv2.weight", (64, 64, 3, 3)),
    ("layer1.0.bn2.weight", (64,)),
    ("layer1.0.bn2.bias", (64,)),
    ("layer1.0.bn2.running_mean", (64,)),
    ("layer1.0.bn2.running_var", (64,)),
    ("layer1.0.bn2.num_batches_tracked", ()),
    ("layer1.1.conv1.weight", (64, 64, 3, 3)),
    ("layer1.1.bn1.weight", (64,)),
    ("layer1.1.bn1.bias", (64,)),
    ("layer1.1.bn1.running_mean", (64,)),
    ("layer1.1.bn1.running_var", (64,)),
    ("layer1.1.bn1.num_batches_tracked", ()),
    ("layer1.1.conv2.weight", (64, 64, 3, 3)),
    ("layer1.1.bn2.weight", (64,)),
    ("layer1.1.bn2.bias", (64,)),
    ("layer1.1.bn2.running_mean", (64,)),
    ("layer1.1.bn2.running_var", (64,)),
    ("layer1.1.bn2.num_batches_tracked", ()),
    ("layer2.0.conv1.weight", (128, 64, 3, 3)),
    ("layer2.0.bn1.weight", (128,)),
    ("layer2.0.bn1.bias", (128,)),
    ("layer2.0.bn1.running_mean", (128,)),
    ("layer2.0.bn1.running_var", (128,)),
    ("layer2.0.bn1.num_batches_tracked", ()),
    ("layer2.0.conv2.weight", (128, 128, 3, 3)),
    ("layer2.0.bn2.weight", (128,)),
    ("layer2.0.bn2.bias", (128,)),
    ("layer2.0.bn2.running_mean", (128,)),
    ("layer2.0.bn2.running_var", (128,)),
    ("layer2.0.bn2.num_batches_tracked", ()),
    ("layer2.0.downsample.0.weight", (128, 64, 1, 1)),
    ("layer2.0.downsample.1.weight", (128,)),
    ("layer2.0.downsample.1.bias", (128,)),
    ("layer2.0.downsample.1.running_mean", (128,)),
    ("layer2.0.downsample.1.running_var", (128,)),
    ("layer2.0.downsample.1.num_batches_tracked", ()),
    ("layer2.1.conv1.weight", (128, 128, 3, 3)),
    ("layer2.1.bn1.weight", (128,)),
    ("layer2.1.bn1.bias", (128,)),
    ("layer2.1.bn1.running_mean", (128,)),
    ("layer2.1.bn1.running_var", (128,)),
    ("layer2.1.bn1.num_batches_tracked", ()),
    ("layer2.1.conv2.weight", (128, 128, 3, 3)),
    ("layer2.1.bn2.weight", (128,)),
    ("layer2.1.bn2.bias", (128,)),
    ("layer2.1.bn2.running_mean", (128,)),
    ("layer2.1.bn2.running_var", (128,)),
    ("layer2.1.bn2.num_batches_tracked", ()),
    ("layer3.0.conv1.weight", (256, 128, 3, 3)),
    ("layer3.0.bn1.weight", (256,)),
    ("layer3.0.bn1.bias", (256,)),
    ("layer3.0.bn1.running_mean", (256,)),
    ("layer3.0.bn1.running_var", (256,)),
    ("layer3.0.bn1.num_batches_tracked", ()),
    ("layer3.0.conv2.weight", (256, 256, 3, 3)),
    ("layer3.0.bn2.weight", (256,)),
    ("layer3.0.bn2.bias", (256,)),
    ("layer3.0.bn2.running_mean", (256,)),
    ("layer3.0.bn2.running_var", (256,)),
    ("layer3.0.bn2.num_batches_tracked", ()),
    ("layer3.0.downsample.0.weight", (256, 128, 1, 1)),
    ("layer3.0.downsample.1.weight", (256,)),
    ("layer3.0.downsample.1.bias", (256,)),
    ("layer3.0.downsample.1.running_mean", (256,)),
    ("layer3.0.downsample.1.running_var", (256,)),
    ("layer3.0.downsample.1.num_batches_tracked", ()),
    ("layer3.1.conv1.weight", (256, 256, 3, 3)),
    ("layer3.1.bn1.weight", (256,)),
    ("layer3.1.bn1.bias", (256,)),
    ("layer3.1.bn1.running_mean", (256,)),
    ("layer3.1.bn1.running_var", (256,)),
    ("layer3.1.bn1.num_batches_tracked", ()),
    ("layer3.1.conv2.weight", (256, 256, 3, 3)),
    ("layer3.1.bn2.weight", (256,)),
    ("layer3.1.bn2.bias", (256,)),
    ("layer3.1.bn2.running_mean", (256,)),
    ("layer3.1.bn2.running_var", (256,)),
    ("layer3.1.bn2.num_batches_tracked", ()),
    ("layer4.0.conv1.weight", (512, 256, 3, 3)),
    ("layer4.0.bn1.weight", (512,)),
    ("layer4.0.bn1.bias", (512,)),
    ("layer4.0.bn1.running_mean", (512,)),
    ("layer4.0.bn1.running_var", (512,)),
    ("layer4.0.bn1.num_batches_tracked", ()),
    ("layer4.0.conv2.weight", (512, 512, 3, 3)),
    ("layer4.0.bn2.weight", (512,)),
    ("layer4.0.bn2.bias", (512,)),
    ("layer4.0.bn2.running_mean", (512,)),
    ("layer4.0.bn2.running_var", (512,)),
    ("layer4.0.bn2.num_batches_tracked", ()),
    ("layer4.0.downsample.0.weight", (512, 256, 1, 1)),
    ("layer4.0.downsample.1.weight", (512,)),
    ("layer4.0.downsample.1.bias", (512,)),
    ("layer4.0.downsample.1.running_mean", (512,)),
    ("layer4.0.downsample.1.running_var", (512,)),
    ("layer4.0.downsample.1.num_batches_tracked", ()),
    ("layer4.1.conv1.weight", (512, 512, 3, 3)),
    ("layer4.1.bn1.weight", (512,)),
    ("layer4.1.bn1.bias", (512,)),
    ("layer4.1.bn1.running_mean", (512,)),
    ("layer4.1.bn1.running_var", (512,)),
    ("layer4.1.bn1.num_batches_tracked", ()),
    ("layer4.1.conv2.weight", (512, 512, 3, 3)),
    ("layer4.1.bn2.weight", (512,)),
    ("layer4.1.bn2.bias", (512,)),
    ("layer4.1.bn2.running_mean", (512,)),
    ("layer4.1.bn2.running_var", (512,)),
    ("layer4.1.bn2.num_batches_tracked", ()),
    ("fc.weight", (1000, 512)),
    ("fc.bias", (1000,)),
]


def _bn(prefix: str, c: int) -> list[tuple[str, tuple[int, ...]]]:
    """A BatchNorm2d's state_dict entries."""
    stats = [(f"{prefix}.{k}", (c,)) for k in ("weight", "bias", "running_mean", "running_var")]
    return [*stats, (f"{prefix}.num_batches_tracked", ())]


# pytorch/examples dcgan/main.py at 64 px, nz=100, ngf=ndf=64, nc=3: (key, shape) in order.
EXAMPLES_DCGAN_G = [
    ("main.0.weight", (100, 512, 4, 4)),
    *_bn("main.1", 512),
    ("main.3.weight", (512, 256, 4, 4)),
    *_bn("main.4", 256),
    ("main.6.weight", (256, 128, 4, 4)),
    *_bn("main.7", 128),
    ("main.9.weight", (128, 64, 4, 4)),
    *_bn("main.10", 64),
    ("main.12.weight", (64, 3, 4, 4)),
]
EXAMPLES_DCGAN_D = [
    ("main.0.weight", (64, 3, 4, 4)),
    ("main.2.weight", (128, 64, 4, 4)),
    *_bn("main.3", 128),
    ("main.5.weight", (256, 128, 4, 4)),
    *_bn("main.6", 256),
    ("main.8.weight", (512, 256, 4, 4)),
    *_bn("main.9", 512),
    ("main.11.weight", (1, 512, 4, 4)),
]

# Small instances of every classifier: (name, args, input shape).
CLASSIFIERS = [
    ("mlp", {"in_shape": [6], "num_classes": 3, "hidden": [16, 8]}, (5, 6)),
    (
        "mlp",
        {"in_shape": [1, 8, 8], "num_classes": 4, "hidden": [16], "weight_norm": False, "dropout": 0.2},
        (5, 1, 8, 8),
    ),
    ("convnet", {"in_channels": 1, "num_classes": 3, "widths": [4, 8]}, (5, 1, 8, 8)),
    ("convnet", {"in_channels": 3, "num_classes": 3, "widths": [4, 8], "norm": "weight"}, (5, 3, 12, 12)),
    ("resnet18", {"num_classes": 3, "in_channels": 1, "small_input": True}, (2, 1, 16, 16)),
]
GENERATORS = [
    ("dcgan_g", {"z_dim": 8, "resolution": 32, "channels": 3, "width": 4}, (3, 3, 32, 32)),
    ("dcgan_g", {"z_dim": 8, "resolution": 128, "channels": 1, "width": 2}, (2, 1, 128, 128)),
    ("mlp_g", {"z_dim": 8, "out_shape": [1, 8, 8], "hidden": [16, 16]}, (3, 1, 8, 8)),
    ("mlp_g", {"z_dim": 8, "out_shape": [5], "output": "linear", "batch_norm": False, "dropout": 0.1}, (3, 5)),
    ("conv_g", {"z_dim": 8, "channels": 1, "height": 12, "width": 8, "base": 4}, (3, 1, 12, 8)),
]
DISCRIMINATORS = [
    ("dcgan_d", {"resolution": 32, "channels": 3, "width": 4}, (3, 3, 32, 32)),
    ("dcgan_d", {"resolution": 64, "channels": 1, "width": 4, "norm": "spectral"}, (3, 1, 64, 64)),
    ("mlp_d", {"in_shape": [5], "hidden": [8], "norm": "weight"}, (3, 5)),
    ("mlp_d", {"in_shape": [1, 8, 8], "hidden": [8, 8], "dropout": 0.1, "input_noise_std": 0.1}, (3, 1, 8, 8)),
    ("conv_d", {"channels": 1, "widths": [4, 8], "norm": "batch"}, (3, 1, 8, 8)),
]


def _keys_and_shapes(module: nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    return [(k, tuple(v.shape)) for k, v in module.state_dict().items()]


# Registry -----------------------------------------------------------------------------------------


def test_registry_names_and_roles() -> None:
    roles = {name: e.role for name, e in registry.ARCHITECTURES.items()}
    assert {n for n, r in roles.items() if r == "classifier"} == {"mlp", "convnet", "resnet18", "minilm"}
    assert {n for n, r in roles.items() if r == "generator"} == {"dcgan_g", "mlp_g", "conv_g"}
    assert {n for n, r in roles.items() if r == "discriminator"} == {"dcgan_d", "mlp_d", "conv_d"}


def test_unknown_architecture_lists_the_known_ones() -> None:
    with pytest.raises(ModelError, match="unknown architecture 'vgg'.*resnet18") as e:
        registry.build("vgg", {})
    assert e.value.code == "invalid_model"


@pytest.mark.parametrize(
    ("args", "field", "message"),
    [
        ({"num_classes": 3, "colour": 1}, "colour", "unknown argument 'colour'"),
        ({"num_classes": "3"}, "num_classes", "must be an integer"),
        ({"num_classes": True}, "num_classes", "must be an integer"),
        ({"num_classes": 3, "small_input": 1}, "small_input", "true or false"),
        ({"num_classes": 3, "mean": "0.5"}, "mean", "must be a list"),
        ({"num_classes": 3, "mean": [0.5, "x", 0.5]}, "mean[1]", "must be a number"),
        ({}, "num_classes", "needs the argument 'num_classes'"),
        ({"num_classes": 0}, "num_classes", "must be positive"),
        ({"num_classes": 3, "mean": [0.1, 0.2]}, "mean", "expected 0, 1 or 3"),
        ({"num_classes": 3, "std": [0.0]}, "std", "positive"),
    ],
)
def test_bad_arguments_name_the_culprit(args: dict, field: str, message: str) -> None:
    with pytest.raises(ModelError, match=message) as e:
        registry.build("resnet18", args)
    assert e.value.field == field


@pytest.mark.parametrize(
    ("name", "args", "field"),
    [
        ("dcgan_g", {"resolution": 48}, "resolution"),
        ("dcgan_d", {"resolution": 256}, "resolution"),
        ("dcgan_d", {"norm": "layer"}, "norm"),
        ("conv_g", {"height": 10}, "height"),
        ("mlp", {"in_shape": [1, 8], "num_classes": 2}, "in_shape"),
        ("mlp", {"in_shape": [4], "num_classes": 2, "dropout": 1.0}, "dropout"),
        ("mlp_g", {"out_shape": [4], "hidden": [8, -1]}, "hidden"),
        ("convnet", {"in_channels": 1, "num_classes": 2, "widths": []}, "widths"),
    ],
)
def test_bad_values_are_model_errors(name: str, args: dict, field: str) -> None:
    with pytest.raises(ModelError) as e:
        registry.build(name, args)
    assert e.value.field == field


def test_arguments_round_trip_through_json_with_defaults() -> None:
    net = build_as(MLP, "mlp", {"in_shape": [4], "num_classes": 3, "hidden": [8], "mean": [1]})
    name, args = registry.current_arguments(net)
    assert name == "mlp"
    assert args["hidden"] == [8] and args["mean"] == [1.0] and args["input_noise_std"] == 0.3
    rebuilt = registry.build(name, args)
    assert _keys_and_shapes(rebuilt) == _keys_and_shapes(net)
    net.replace_head(7)
    assert registry.current_arguments(net)[1]["num_classes"] == 7


@dataclass(frozen=True)
class _Layout:
    kind: str
    channels: int = 0
    height: int = 0
    width: int = 0
    features: int = 0

    def shape(self) -> tuple[int, ...]:
        return (self.channels, self.height, self.width) if self.kind == "image" else (self.features,)


@pytest.mark.parametrize(
    ("layout", "name", "extra"),
    [
        (_Layout("features", features=12), "mlp", {"in_shape": [12]}),
        (_Layout("image", 1, 8, 8), "convnet", {"in_channels": 1}),
        (_Layout("image", 1, 28, 28), "convnet", {"in_channels": 1}),
        (_Layout("image", 3, 32, 32), "convnet", {"in_channels": 3}),
        (_Layout("image", 3, 33, 48), "resnet18", {"in_channels": 3, "small_input": True}),
        (_Layout("image", 3, 128, 96), "resnet18", {"in_channels": 3, "small_input": False}),
    ],
)
def test_default_classifier_for_layout(layout: _Layout, name: str, extra: dict) -> None:
    got_name, args = registry.default_classifier_for(layout, num_classes=4)
    assert got_name == name and args == {**extra, "num_classes": 4}
    registry.build(got_name, args)  # the defaults build as they are


@pytest.mark.parametrize(
    ("layout", "g", "d"),
    [
        (_Layout("features", features=7), "mlp_g", "mlp_d"),
        (_Layout("image", 1, 8, 8), "conv_g", "conv_d"),
        (_Layout("image", 1, 28, 28), "conv_g", "conv_d"),
        (_Layout("image", 3, 32, 32), "dcgan_g", "dcgan_d"),
        (_Layout("image", 3, 128, 128), "dcgan_g", "dcgan_d"),
    ],
)
def test_default_gan_for_layout(layout: _Layout, g: str, d: str) -> None:
    (g_name, g_args), (d_name, d_args) = registry.default_gan_for(layout, z_dim=16)
    assert (g_name, d_name) == (g, d)
    with torch.device("meta"):  # shapes only: the 128 px DCGAN is large
        gen = registry.build(g_name, g_args)
        disc = registry.build(d_name, d_args)
        fake = gen(torch.zeros(2, 16, device="meta"))
        assert tuple(fake.shape) == (2, *layout.shape())
        assert tuple(disc(fake).shape) == (2,)


def test_default_gan_refuses_odd_sizes() -> None:
    with pytest.raises(ModelError, match="resize|multiples of 4"):
        registry.default_gan_for(_Layout("image", 3, 30, 30), z_dim=8)


# Classifiers ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "args", "shape"), CLASSIFIERS)
def test_classifier_interface(name: str, args: dict, shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    net = classifier(name, args).eval()
    x = torch.rand(shape)
    logits, feats = net(x), net.features(x)
    assert logits.shape == (shape[0], args["num_classes"])
    assert isinstance(net.head, nn.Linear) and feats.shape == (shape[0], net.head.in_features)
    torch.testing.assert_close(net.head(feats), logits)  # features are exactly the head's input
    blocks = net.blocks()
    assert blocks and all(isinstance(b, nn.Module) for b in blocks)
    head_params = {id(p) for p in net.head.parameters()}
    assert not any(id(p) in head_params for b in blocks for p in b.parameters())
    # Lowest first: freezing the first block stops gradients at the input side only.
    for p in blocks[0].parameters():
        p.requires_grad_(False)
    net.train()
    net(x).sum().backward()
    assert all(p.grad is None for p in blocks[0].parameters())
    assert all(p.grad is not None for b in blocks[1:] for p in b.parameters())
    assert all(p.grad is not None for p in net.head.parameters())
    net.replace_head(7)
    assert isinstance(net.head, nn.Linear) and net(x).shape == (shape[0], 7)
    assert net.head.in_features == feats.shape[1]


def test_normalisation_is_applied_inside_and_not_saved() -> None:
    x = torch.rand(4, 3, 8, 8)
    plain = registry.build("convnet", {"in_channels": 3, "num_classes": 2, "widths": [4]}).eval()
    shifted = registry.build(
        "convnet", {"in_channels": 3, "num_classes": 2, "widths": [4], "mean": [0.5, 0.2, 0.1], "std": [2.0]}
    ).eval()
    shifted.load_state_dict(plain.state_dict())  # buffers are not in the state_dict: keys agree
    assert "norm_mean" not in plain.state_dict()
    mean = torch.tensor([0.5, 0.2, 0.1]).view(1, 3, 1, 1)
    torch.testing.assert_close(shifted(x), plain((x - mean) / 2.0))


def test_data_normalization_is_per_channel_and_never_divides_by_zero() -> None:
    x = torch.zeros(10, 2, 4, 4)
    x[:, 0] = torch.arange(10.0).view(10, 1, 1)
    stats = data_normalization(x)
    assert stats["mean"][0] == pytest.approx(4.5) and stats["std"][1] == 1.0
    assert data_normalization(torch.ones(5, 3))["std"] == [1.0, 1.0, 1.0]


def test_mlp_follows_improved_gan_and_noise_is_training_only() -> None:
    net = build_as(MLP, "mlp", {"in_shape": [1, 28, 28], "num_classes": 10})
    linears = [b.linear for b in net.blocks() if isinstance(b.linear, nn.Linear)]  # every block's
    assert [lin.out_features for lin in linears] == [1000, 500, 250, 250, 250]
    assert hasattr(linears[0], "parametrizations")  # weight norm
    x = torch.rand(3, 1, 28, 28)
    net.eval()
    torch.testing.assert_close(net(x), net(x))
    net.train()
    assert not torch.allclose(net(x), net(x))
    assert not torch.allclose(net.features(x), net.features(x))


def test_resnet18_state_dict_matches_torchvision() -> None:
    net = build_as(ResNet18, "resnet18", {"num_classes": 1000})
    assert _keys_and_shapes(net) == TORCHVISION_RESNET18
    assert net.head is net.fc
    assert net.features(torch.rand(1, 3, 64, 64)).shape == (1, 512)


def test_resnet18_variants_keep_the_names() -> None:
    net = registry.build("resnet18", {"num_classes": 5, "in_channels": 1, "small_input": True})
    keys = _keys_and_shapes(net)
    assert [k for k, _ in keys] == [k for k, _ in TORCHVISION_RESNET18]
    assert dict(keys)["conv1.weight"] == (64, 1, 3, 3) and dict(keys)["fc.weight"] == (5, 512)
    assert net(torch.rand(2, 1, 32, 32)).shape == (2, 5)


# GAN nets ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "args", "out_shape"), GENERATORS)
def test_generators(name: str, args: dict, out_shape: tuple[int, ...]) -> None:
    g = generator(name, args)
    assert g.z_dim == args["z_dim"]
    with torch.no_grad():
        out = g(torch.randn(out_shape[0], g.z_dim))
    assert out.shape == out_shape
    if args.get("output") != "linear":
        assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert g.blocks()


@pytest.mark.parametrize(("name", "args", "in_shape"), DISCRIMINATORS)
def test_discriminators(name: str, args: dict, in_shape: tuple[int, ...]) -> None:
    d = discriminator(name, args)
    x = torch.rand(in_shape, requires_grad=True)
    logits = d(x)
    assert logits.shape == (in_shape[0],)
    # R1 needs a gradient with respect to the input, through every layer.
    (grad,) = torch.autograd.grad(logits.sum(), x, create_graph=True)
    assert grad.shape == x.shape and float(grad.detach().abs().sum()) > 0
    blocks = d.blocks()
    assert len(blocks) >= 2
    for p in blocks[0].parameters():
        p.requires_grad_(False)
    d.zero_grad()
    d(x.detach()).sum().backward()
    assert all(p.grad is None for p in blocks[0].parameters())
    assert all(p.grad is not None for p in blocks[-1].parameters())


def test_dcgan_matches_pytorch_examples_at_64px() -> None:
    g = build_as(DCGANGenerator, "dcgan_g", {"z_dim": 100, "resolution": 64, "channels": 3, "width": 64})
    d = build_as(DCGANDiscriminator, "dcgan_d", {"resolution": 64, "channels": 3, "width": 64})
    assert _keys_and_shapes(g) == EXAMPLES_DCGAN_G
    assert _keys_and_shapes(d) == EXAMPLES_DCGAN_D
    assert len(g.blocks()) == 5 and len(d.blocks()) == 5
