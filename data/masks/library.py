"""MaskLibrary: the set of mask shapes and textures that masked pairs are drawn from.

- ``MaskLibrary.procedural(seed=0, n_shapes=900, n_textures=800)``: shape ``i`` / texture ``j`` are generated from
  (seed, i) / (seed, j) on first use and cached; any size works (the paper's library has 900 shapes, 800 textures).
- ``MaskLibrary.from_dir(DIR)``: the folder data.masks.writer (scripts/make_masks.py) writes (``shapes/*.json`` + PNGs,
  ``textures/*.png``) plus user material: mask templates (RGBA PNG + anchor JSON, see ``templates.py``) in
  ``DIR/templates`` and texture patches (any image) in ``DIR/patches``.
- ``add_templates(folder)`` / ``add_textures(folder)`` extend either kind of library.

Items load lazily and are cached per process; ``preload()`` fills the cache (call it before forking DataLoader
workers so they share the memory, about 70 MB for 900 + 800 items).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np

from data.masks.shapes import Shape, make_shape
from data.masks.templates import TemplateError, load_template, read_template_json
from data.masks.textures import IMAGE_EXTS, Texture, load_texture_image, make_texture


def _load_texture_file(path: Path, tileable: bool, meta: dict) -> Texture:
    tex = load_texture_image(path, max_side=1024 if tileable else 256)
    tex.tileable = tileable
    tex.kind = meta.get("kind", tex.kind)
    tex.params = meta.get("params", tex.params)
    return tex


def _texture_sources(folder: Path) -> list[Callable[[], Texture]]:
    """Every image in ``folder``; a sibling JSON {"tileable": true, ...} marks generated (wrap-around) tiles."""
    out = []
    for path in sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS):
        meta: dict = {}
        js = path.with_suffix(".json")
        if js.is_file():
            try:
                meta = json.loads(js.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise TemplateError(f"texture JSON {js}: malformed JSON ({e})") from None
        out.append(partial(_load_texture_file, path, bool(meta.get("tileable", False)), meta))
    return out


def _template_sources(folder: Path) -> list[Callable[[], Shape]]:
    """Every ``*.json`` template in ``folder`` (validated now, pixels loaded on first use)."""
    out = []
    for js in sorted(folder.glob("*.json")):
        read_template_json(js)
        out.append(partial(load_template, js))
    return out


class MaskLibrary:
    """Shapes and textures, indexable and sampleable.

    Args:
        shapes: zero-argument callables returning a ``Shape`` (procedural generators or template loaders).
        textures: zero-argument callables returning a ``Texture``.
        cache: keep loaded items in memory (per process).
    """

    def __init__(self, shapes: list[Callable[[], Shape]], textures: list[Callable[[], Texture]], cache: bool = True):
        if not shapes:
            raise ValueError("MaskLibrary: no shapes")
        if not textures:
            raise ValueError("MaskLibrary: no textures")
        self._shape_src = list(shapes)
        self._texture_src = list(textures)
        self.cache = cache
        self._shapes: dict[int, Shape] = {}
        self._textures: dict[int, Texture] = {}

    # -- construction -------------------------------------------------------------------------------------------
    @classmethod
    def procedural(cls, seed: int = 0, n_shapes: int = 900, n_textures: int = 800, cache: bool = True) -> MaskLibrary:
        """A generated library: shape i = ``make_shape(seed, i)``, texture j = ``make_texture(seed, j)``."""
        return cls([partial(make_shape, seed, i) for i in range(n_shapes)],
                   [partial(make_texture, seed, j) for j in range(n_textures)], cache)

    @classmethod
    def from_dir(cls, root: str | Path, cache: bool = True) -> MaskLibrary:
        """Load ``root/shapes``, ``root/templates`` (shape templates), ``root/textures``, ``root/patches``."""
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"mask library folder not found: {root}")
        shapes: list = []
        textures: list = []
        for sub in ("shapes", "templates"):
            if (root / sub).is_dir():
                shapes += _template_sources(root / sub)
        for sub in ("textures", "patches"):
            if (root / sub).is_dir():
                textures += _texture_sources(root / sub)
        if not shapes:
            raise FileNotFoundError(f"mask library {root}: no shape templates (*.json) in shapes/ or templates/")
        if not textures:
            raise FileNotFoundError(f"mask library {root}: no texture images in textures/ or patches/")
        return cls(shapes, textures, cache)

    def add_templates(self, folder: str | Path) -> int:
        """Append the mask templates (JSON + RGBA PNG) in ``folder``; returns how many were added."""
        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"mask template folder not found: {folder}")
        src = _template_sources(folder)
        self._shape_src += src
        return len(src)

    def add_textures(self, folder: str | Path) -> int:
        """Append the texture images in ``folder`` (user patches are mirrored, not tiled); returns the count."""
        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"texture folder not found: {folder}")
        src = _texture_sources(folder)
        self._texture_src += src
        return len(src)

    # -- access -------------------------------------------------------------------------------------------------
    @property
    def n_shapes(self) -> int:
        return len(self._shape_src)

    @property
    def n_textures(self) -> int:
        return len(self._texture_src)

    def shape(self, i: int) -> Shape:
        """Shape ``i`` (0 <= i < n_shapes)."""
        s = self._shapes.get(i)
        if s is None:
            s = self._shape_src[i]()
            if self.cache:
                self._shapes[i] = s
        return s

    def texture(self, j: int) -> Texture:
        """Texture ``j`` (0 <= j < n_textures)."""
        t = self._textures.get(j)
        if t is None:
            t = self._texture_src[j]()
            if self.cache:
                self._textures[j] = t
        return t

    def sample(self, rng: np.random.Generator) -> tuple[Shape, Texture]:
        """A uniformly drawn (shape, texture) pair; consumes exactly two draws of ``rng``."""
        i = int(rng.integers(self.n_shapes))
        j = int(rng.integers(self.n_textures))
        return self.shape(i), self.texture(j)

    def preload(self, progress: Callable[[int, int], None] | None = None) -> MaskLibrary:
        """Load every item into the cache (``progress(done, total)`` is called along the way)."""
        total = self.n_shapes + self.n_textures
        for i in range(self.n_shapes):
            self.shape(i)
            if progress:
                progress(i + 1, total)
        for j in range(self.n_textures):
            _ = self.texture(j).rgbx  # builds the cached 4-channel copy the synthesiser samples
            if progress:
                progress(self.n_shapes + j + 1, total)
        return self

    def __getstate__(self) -> dict:
        # spawned DataLoader workers rebuild items lazily instead of unpickling the whole cache
        state = dict(self.__dict__)
        state["_shapes"], state["_textures"] = {}, {}
        return state

    def __repr__(self) -> str:
        return f"MaskLibrary(shapes={self.n_shapes}, textures={self.n_textures})"
