"""Mask template library: parametric shapes, textures, user templates, canonical face frame."""

from data.masks.canonical import CANONICAL_LANDMARKS, CANONICAL_LANDMARKS_3D, FIT_ANCHORS, posed_landmarks
from data.masks.library import MaskLibrary
from data.masks.shapes import SHAPE_KINDS, Shape, make_shape
from data.masks.templates import TemplateError, load_template, save_shape
from data.masks.textures import TEXTURE_KINDS, Texture, load_texture_image, make_texture

__all__ = ["CANONICAL_LANDMARKS", "CANONICAL_LANDMARKS_3D", "FIT_ANCHORS", "SHAPE_KINDS", "TEXTURE_KINDS",
           "MaskLibrary", "Shape", "TemplateError", "Texture", "load_template", "load_texture_image", "make_shape",
           "make_texture", "posed_landmarks", "save_shape"]
