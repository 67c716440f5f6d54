"""PadToMultiple: transparent pad-and-crop for sizes a U-Net cannot take directly."""

import pytest
import torch
from torch import nn

from nas_core.baselines import UNet, UNetPlusPlus
from nas_core.padding import PadToMultiple, pad_amount


@pytest.mark.parametrize(
    ("size", "multiple", "expected"),
    [(32, 16, (0, 0)), (37, 16, (5, 6)), (50, 16, (7, 7)), (1, 16, (7, 8)), (17, 16, (7, 8)), (5, 1, (0, 0))],
)
def test_pad_amount(size, multiple, expected):
    before, after = pad_amount(size, multiple)
    assert (before, after) == expected
    assert (size + before + after) % multiple == 0


@pytest.mark.parametrize(("size", "multiple"), [(0, 16), (10, 0)])
def test_pad_amount_rejects_bad_values(size, multiple):
    with pytest.raises(ValueError):
        pad_amount(size, multiple)


class Recorder(nn.Module):
    """Identity that remembers the shape it was called with."""

    def forward(self, x):
        self.seen = tuple(x.shape)
        return x


class _Capture(nn.Module):
    """Identity that keeps a copy of the (padded) tensor it was given."""

    def __init__(self, store, key):
        super().__init__()
        self.store, self.key = store, key

    def forward(self, x):
        self.store[self.key] = x.clone()
        return x


@pytest.mark.parametrize(("h", "w"), [(37, 50), (33, 16), (1, 31)])
def test_identity_roundtrip_restores_the_input(h, w):
    rec = Recorder()
    x = torch.randn(2, 3, h, w)
    y = PadToMultiple(rec, 16)(x)
    assert rec.seen[2] % 16 == 0 and rec.seen[3] % 16 == 0
    # The crop lands exactly on the original pixels, wherever the padding went.
    torch.testing.assert_close(y, x)


def test_reflect_padding_mirrors_and_falls_back_to_zeros():
    x = torch.arange(1.0, 7.0).expand(1, 1, 8, 6)  # width 6 -> 8: one column each side
    padded = {}
    for mode in ("reflect", "constant"):
        PadToMultiple(_Capture(padded, mode), 8, mode=mode)(x)
    assert padded["reflect"][0, 0, 0].tolist() == [2, 1, 2, 3, 4, 5, 6, 5]
    assert padded["constant"][0, 0, 0].tolist() == [0, 1, 2, 3, 4, 5, 6, 0]
    # Width 1 cannot be reflected to 16: zeros, not an error.
    tiny = {}
    PadToMultiple(_Capture(tiny, "t"), 16)(torch.ones(1, 1, 16, 1))
    assert tiny["t"].sum() == 16


@pytest.mark.parametrize("cls", [UNet, UNetPlusPlus])
def test_wrapped_baseline_accepts_odd_sizes(cls):
    net = cls(in_channels=1, num_classes=3, filters=(4, 8, 16, 32, 64))
    model = PadToMultiple(net, net.size_multiple)
    y = model(torch.randn(2, 1, 37, 50))
    assert y.shape == (2, 3, 37, 50)
    y.mean().backward()
    assert all(p.grad is not None for p in net.parameters())


def test_equals_unwrapped_module_for_divisible_sizes():
    net = UNet(in_channels=2, num_classes=2, filters=(4, 8, 16, 32, 64)).eval()
    x = torch.randn(1, 2, 32, 48)
    torch.testing.assert_close(PadToMultiple(net, 16)(x), net(x), rtol=0, atol=0)
    # Parameters are the wrapped module's, nothing added.
    assert list(PadToMultiple(net, 16).parameters()) == list(net.parameters())


def test_odd_size_output_matches_padding_by_hand():
    net = UNet(num_classes=2, filters=(4, 8, 16)).eval()
    x = torch.randn(1, 1, 9, 6)
    by_hand = net(torch.nn.functional.pad(x, (1, 1, 1, 2), mode="reflect"))[:, :, 1:10, 1:7]
    torch.testing.assert_close(PadToMultiple(net, 4)(x), by_hand)


def test_volumes_are_padded_in_three_dimensions():
    rec = Recorder()
    x = torch.randn(1, 1, 5, 9, 10)
    torch.testing.assert_close(PadToMultiple(rec, 4)(x), x)
    assert rec.seen == (1, 1, 8, 12, 12)


def test_module_that_changes_size_is_refused():
    with pytest.raises(ValueError, match="spatial size"):
        PadToMultiple(nn.MaxPool2d(2), 16)(torch.randn(1, 1, 20, 20))


def test_bad_arguments():
    with pytest.raises(ValueError, match="pad mode"):
        PadToMultiple(nn.Identity(), 16, mode="circular")
    with pytest.raises(ValueError):
        PadToMultiple(nn.Identity(), 0)
    with pytest.raises(ValueError, match="expected"):
        PadToMultiple(nn.Identity(), 16)(torch.randn(3, 10))
