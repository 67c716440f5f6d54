"""Baselines: exact parameter counts of the paper's table, shapes, gradients, registry."""

import pytest
import torch

from nas_core.baselines import BASELINES, UNet, UNetPlusPlus, build_baseline


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


# First conv: 3x3 kernel, 32 filters -> each extra input channel adds 9 * 32 weights.
# Head: 1x1 conv from 32 channels -> each extra class adds 32 weights + 1 bias.
@pytest.mark.parametrize(
    ("cls", "in_channels", "num_classes", "expected"),
    [
        (UNet, 1, 1, 7_759_521),
        (UNet, 1, 2, 7_759_521 + 33),
        (UNet, 3, 1, 7_759_521 + 2 * 9 * 32),
        (UNet, 4, 5, 7_759_521 + 3 * 9 * 32 + 4 * 33),
        (UNetPlusPlus, 1, 1, 9_041_601),
        (UNetPlusPlus, 1, 2, 9_041_601 + 33),
        (UNetPlusPlus, 3, 1, 9_041_601 + 2 * 9 * 32),
        (UNetPlusPlus, 2, 4, 9_041_601 + 9 * 32 + 3 * 33),
    ],
)
def test_parameter_counts_match_the_paper(cls, in_channels, num_classes, expected):
    assert n_params(cls(in_channels=in_channels, num_classes=num_classes)) == expected


def test_deep_supervision_adds_three_heads():
    # Four 1x1 heads (on X[0][1..4]) instead of one.
    assert n_params(UNetPlusPlus(deep_supervision=True)) == 9_041_601 + 3 * 33
    assert n_params(UNetPlusPlus(num_classes=3, deep_supervision=True)) == 9_041_601 + 2 * 33 + 3 * 3 * 33


def test_no_batch_norm_and_only_bias_convs():
    for m in (UNet(), UNetPlusPlus()):
        assert not any(isinstance(x, torch.nn.modules.batchnorm._BatchNorm) for x in m.modules())
        convs = [x for x in m.modules() if isinstance(x, torch.nn.Conv2d | torch.nn.ConvTranspose2d)]
        assert convs and all(c.bias is not None for c in convs)


@pytest.mark.parametrize(
    ("name", "in_channels", "num_classes", "size", "kwargs"),
    [
        ("unet", 1, 1, 32, {}),
        ("unet", 3, 2, 64, {}),
        ("unet", 1, 4, 32, {}),
        ("unetpp", 1, 1, 32, {}),
        ("unetpp", 2, 3, 64, {}),
        ("unetpp", 1, 2, 32, {"deep_supervision": True}),
    ],
)
def test_forward_shapes(name, in_channels, num_classes, size, kwargs):
    model = build_baseline(name, in_channels, num_classes, **kwargs).eval()
    with torch.no_grad():
        y = model(torch.randn(2, in_channels, size, size))
    assert y.shape == (2, num_classes, size, size)
    assert torch.isfinite(y).all()


@pytest.mark.parametrize(("cls", "depth"), [(UNet, 2), (UNetPlusPlus, 2), (UNetPlusPlus, 3)])
def test_smaller_filters_and_depth(cls, depth):
    model = cls(in_channels=1, num_classes=2, filters=(4, 8, 16, 32)[: depth + 1])
    assert model.size_multiple == 2**depth
    assert model(torch.randn(1, 1, 8 * 2**depth // 2, 2**depth)).shape == (1, 2, 4 * 2**depth, 2**depth)


@pytest.mark.parametrize("cls", [UNet, UNetPlusPlus])
def test_gradients_reach_every_parameter(cls):
    model = cls(in_channels=1, num_classes=2, filters=(4, 8, 16))
    x = torch.randn(2, 1, 16, 16)
    model(x).square().mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert p.grad.abs().sum() > 0, name


def test_deep_supervision_heads_and_mean():
    model = UNetPlusPlus(num_classes=2, filters=(4, 8, 16, 32), deep_supervision=True).eval()
    x = torch.randn(1, 1, 16, 16)
    heads = model.forward_heads(x)
    assert len(heads) == 3 and all(h.shape == (1, 2, 16, 16) for h in heads)
    # The heads see different nodes, so they differ, and forward is their mean.
    assert not torch.allclose(heads[0], heads[-1])
    torch.testing.assert_close(model(x), torch.stack(heads).mean(0))
    # Every head gets a gradient from per-head losses.
    sum(h.mean() for h in model.forward_heads(x)).backward()
    assert all(h.weight.grad is not None for h in model.heads)


def test_unetpp_without_deep_supervision_uses_last_node_only():
    model = UNetPlusPlus(num_classes=1, filters=(4, 8, 16)).eval()
    assert len(model.heads) == 1
    x = torch.randn(1, 1, 8, 8)
    torch.testing.assert_close(model(x), model.forward_heads(x)[0])


@pytest.mark.parametrize("cls", [UNet, UNetPlusPlus])
def test_indivisible_input_is_refused_with_the_fix(cls):
    with pytest.raises(ValueError, match="PadToMultiple"):
        cls()(torch.randn(1, 1, 40, 32))


def test_registry_and_unknown_name():
    assert set(BASELINES) == {"unet", "unetpp"}
    assert isinstance(build_baseline("unetpp", 1, 2), UNetPlusPlus)
    with pytest.raises(ValueError, match=r"'resnet'.*\['unet', 'unetpp'\]"):
        build_baseline("resnet", 1, 2)


@pytest.mark.parametrize(
    "kwargs", [{"in_channels": 0}, {"num_classes": 0}, {"filters": (32,)}, {"filters": (32, 0)}]
)
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        UNet(**kwargs)
