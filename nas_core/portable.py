"""A trained network as a TorchScript module that needs no Thrifty NAS code and takes any H and W.

:class:`~nas_core.padding.PadToMultiple` computes its padding with Python integers, so a
plain ``torch.jit.trace`` (or a TorchScript-based ONNX export) would freeze it at the traced
size. Here the bare network (whose ops only halve and double the size, so a trace of it holds
at every multiple of ``2 ** depth``) is traced, and the pad-and-crop around it is *scripted*:
the padding is computed from the input's shape at run time, with the same rule (reflect,
zeros when reflection is impossible, the odd pixel after). The result loads with
``torch.jit.load`` alone and exports to ONNX with dynamic height and width.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn

from nas_core.data.frame import as_hw
from nas_core.padding import PadToMultiple

#: the second size a portable module is checked at: odd, so the padding path is exercised
_PROBE_GROWTH = (3, 5)


class PadCrop(nn.Module):
    """Scriptable twin of :class:`~nas_core.padding.PadToMultiple` for ``[B, C, H, W]`` inputs.

    (No class-level annotations: with postponed annotations TorchScript cannot read them; it
    infers ``multiple: int`` and ``reflect: bool`` from the values.)
    """

    def __init__(self, net: nn.Module, multiple: int, reflect: bool) -> None:
        super().__init__()
        self.net = net
        self.multiple = multiple
        self.reflect = reflect

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[2], x.shape[3]
        pad_h = (self.multiple - h % self.multiple) % self.multiple
        pad_w = (self.multiple - w % self.multiple) % self.multiple
        top, left = pad_h // 2, pad_w // 2
        bottom, right = pad_h - top, pad_w - left
        pads = [left, right, top, bottom]
        if self.reflect and max(top, bottom) < h and max(left, right) < w:
            x = F.pad(x, pads, mode="reflect")
        else:
            x = F.pad(x, pads, mode="constant", value=0.0)
        y = self.net(x)
        return y[:, :, top:top + h, left:left + w]


def trace_size(image_size: int | tuple[int, int] | list[int], multiple: int) -> tuple[int, int]:
    """The training size rounded up to the multiple: the shape the bare network is traced at."""
    return tuple(-(-side // multiple) * multiple for side in as_hw(image_size))  # type: ignore[return-value]


def probe_size(image_size: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    """A second, odd size to check a dynamic-size export at (the training size grown by 3x5)."""
    h, w = as_hw(image_size)
    return h + _PROBE_GROWTH[0], w + _PROBE_GROWTH[1]


@torch.no_grad()
def portable_module(model: nn.Module, in_channels: int,
                    image_size: int | tuple[int, int] | list[int]) -> torch.jit.ScriptModule:
    """``model`` (eval mode, CPU) as a ScriptModule taking ``[B, in_channels, H, W]`` of any H and W.

    ``image_size`` only chooses the trace's shape (the training size, rounded up to the
    network's multiple); the module is not tied to it.
    """
    model = model.eval()
    if isinstance(model, PadToMultiple):
        net, multiple, reflect = model.module, model.multiple, model.mode == "reflect"
    else:  # a bare network: its caller already feeds multiples, nothing to pad
        net, multiple, reflect = model, 1, False
    dummy = torch.zeros(1, in_channels, *trace_size(image_size, multiple))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        # TorchScript is deprecated in favour of torch.export, but it is what MONAI bundles and
        # torch.jit.load read, and what the TorchScript-based ONNX exporter takes
        warnings.simplefilter("ignore", DeprecationWarning)
        traced = torch.jit.trace(net, dummy, check_trace=False)
        return torch.jit.script(PadCrop(traced, multiple, reflect))
