"""Image decode + resize with img2dataset's semantics (see :mod:`.resize`)."""

from clipcrawl.filters.images.geometry import RESIZE_MODES, Geometry, plan_geometry
from clipcrawl.filters.images.resize import (
    DEFAULT_MAX_DECODE_PIXELS,
    ENCODERS,
    ResizedImage,
    ResizeOptions,
    resize_image,
)

__all__ = [
    "DEFAULT_MAX_DECODE_PIXELS",
    "ENCODERS",
    "RESIZE_MODES",
    "Geometry",
    "ResizeOptions",
    "ResizedImage",
    "plan_geometry",
    "resize_image",
]
