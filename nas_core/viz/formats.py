"""What the renderers accept, without matplotlib: image formats and the grid's depth limit.

The web tier declares its routes with these (path and query parameters) and loads
matplotlib only when it draws.
"""

from __future__ import annotations

from enum import StrEnum

#: The deepest macro grid `render_macro_grid` draws.
MAX_DEPTH = 8


class ImageFormat(StrEnum):
    PNG = "png"
    SVG = "svg"

    @property
    def media_type(self) -> str:
        return MEDIA_TYPES[self]


MEDIA_TYPES = {ImageFormat.PNG: "image/png", ImageFormat.SVG: "image/svg+xml"}


def image_format(fmt: str) -> ImageFormat:
    try:
        return ImageFormat(fmt)
    except ValueError:
        raise ValueError(f"image format {fmt!r} is not supported; use one of "
                         f"{[f.value for f in ImageFormat]}") from None
