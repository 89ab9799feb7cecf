"""Differentiable 3DMM face model and renderer (buffers only, no trainable parameters)."""

from .morphable import EXPRESSION_NAMES, EXPRESSION_PRESETS, CoeffLayout, MorphableModel
from .raster import RASTERIZERS, Fragments, get_rasterizer
from .render import FaceRenderer, RenderOutput

__all__ = ["CoeffLayout", "MorphableModel", "EXPRESSION_NAMES", "EXPRESSION_PRESETS", "FaceRenderer",
           "RenderOutput", "Fragments", "get_rasterizer", "RASTERIZERS"]
