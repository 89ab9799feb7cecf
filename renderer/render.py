"""FaceRenderer: 3DMM coefficients -> shaded face image I_3D, coverage and skin masks, projected landmarks."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .camera import DENG_CAMERA_DISTANCE, default_focal, euler_rotation, model_to_camera, project
from .lighting import INIT_LIGHT, sh_basis, sh_shading
from .morphable import MorphableModel
from .raster import Fragments, get_rasterizer

__all__ = ["FaceRenderer", "RenderOutput", "SHADINGS"]

# Shading conventions, by the third party whose networks consume the images (docs/formats.md sec. 1, 5):
# deng     Deng et al.'s: vertex normals = normalised sum of the adjacent unit face normals of the 3D (camera-space)
#          mesh; perspective-correct interpolation inside each triangle.
# release  the authors' release (face_de_mask): face normals of the perspective-projected (NDC) mesh, summed
#          unnormalised (area-weighted) per vertex, then normalised; screen-space (not perspective-correct)
#          interpolation, depth test included (PyTorch3D's rasterize_meshes default).
SHADINGS = ("deng", "release")


@dataclass
class RenderOutput:
    """Result of `FaceRenderer(coeffs)` for N faces at H x W pixels.

    image:      (N, 3, H, W) float in [0, 1], background 0.
    mask:       (N, 1, H, W) float {0, 1}, 1 = a face triangle covers the pixel centre.
    skin:       (N, 1, H, W) float {0, 1}, covered pixels of the model's skin region (no eyes, brows, lips, mouth).
    landmarks:  (N, 68, 2) pixel coordinates, x right, y down, iBUG-68 order.
    vertices:   (N, V, 3) camera space: x right, y up, z = depth from the camera (> 0).
    triangles:  (F, 3) int64 vertex indices.
    colors:     (N, V, 3) shaded per-vertex colours (albedo x SH irradiance), unclamped.
    albedo:     (N, V, 3) per-vertex albedo.
    depth:      (N, 1, H, W) camera depth of the visible surface, 0 on background.
    fragments:  the rasterizer's Fragments (triangle ids, barycentrics) for further interpolation.
    """

    image: torch.Tensor
    mask: torch.Tensor
    skin: torch.Tensor
    landmarks: torch.Tensor
    vertices: torch.Tensor
    triangles: torch.Tensor
    colors: torch.Tensor
    albedo: torch.Tensor
    depth: torch.Tensor
    fragments: Fragments


class FaceRenderer(nn.Module):
    """Differentiable renderer of a `MorphableModel` with Deng et al.'s camera and SH lighting.

    image_size: square output size in pixels; focal defaults to 1015 / 224 * image_size; camera at distance 10.
    backend: rasterizer name ('torch' or 'nvdiffrast'). shading: 'deng' (default) or 'release' (``SHADINGS``).
    No parameters: `.to(device)` moves the model's buffers.
    Everything is differentiable w.r.t. the coefficients (visibility is piecewise constant: no silhouette gradients).
    """

    def __init__(self, model: MorphableModel, image_size: int, backend: str = "torch", focal: float | None = None,
                 camera_distance: float = DENG_CAMERA_DISTANCE, init_light: float = INIT_LIGHT, shading: str = "deng"):
        super().__init__()
        if shading not in SHADINGS:
            raise ValueError(f"unknown shading {shading!r}; valid: {', '.join(SHADINGS)}")
        self.shading = shading
        self.model = model
        self.image_size = int(image_size)
        self.focal = float(focal) if focal is not None else default_focal(self.image_size)
        self.camera_distance = float(camera_distance)
        self.init_light = float(init_light)
        self.backend = backend
        self.rasterizer = get_rasterizer(backend)

    @property
    def layout(self):
        return self.model.layout

    def camera_vertices(self, coeffs: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """coeffs (N, size) -> camera-space vertices (N, V, 3) and the split coefficients."""
        c = self.layout.split(coeffs)
        verts = self.model.shape(c["id"], c["exp"])
        return model_to_camera(verts, euler_rotation(c["angle"]), c["trans"], self.camera_distance), c

    def landmarks(self, coeffs: torch.Tensor) -> torch.Tensor:
        """coeffs (N, size) -> projected 68 landmarks (N, 68, 2) in pixels (x right, y down); no rasterization."""
        c = self.layout.split(coeffs)
        idx = self.model.landmark_idx
        base = self.model.shape_base
        flat = torch.cat([c["id"], c["exp"]], 1) @ base.view(-1, 3, base.shape[1])[idx].reshape(68 * 3, -1).t()
        pts = flat.view(-1, 68, 3) + self.model.mean_shape[idx]
        cam = model_to_camera(pts, euler_rotation(c["angle"]), c["trans"], self.camera_distance)
        return project(cam, self.focal, self.image_size)

    def vertex_normals(self, cam: torch.Tensor, pix: torch.Tensor) -> torch.Tensor:
        """Unit vertex normals (N, V, 3) for the SH lighting (x right, y up, z toward the camera), by ``shading``.

        cam (N, V, 3) camera-space vertices, pix (N, V, 2) their projections (``project``).
        """
        if self.shading == "deng":
            # camera space is the world mirrored in z, and a mirror turns cross products into -(mirrored normal):
            # flip x and y back
            return self.model.vertex_normals(cam) * cam.new_tensor([-1.0, -1.0, 1.0])
        # the release's mesh after projection, up to one uniform scale: x, y on the screen (y up), z the world
        # depth coordinate scaled as x and y are at the camera distance (focal * z_world / distance)
        z_world = (self.camera_distance - cam[..., 2]) * (self.focal / self.camera_distance)
        projected = torch.stack([pix[..., 0], -pix[..., 1], z_world], -1)
        return self.model.vertex_normals(projected, area_weighted=True)

    def rasterize(self, cam: torch.Tensor, pix: torch.Tensor):
        """The visible triangle and barycentrics of every pixel (the rasterizer's Fragments), as ``forward`` finds
        them: cam (N, V, 3) camera-space vertices, pix (N, V, 2) their projections. No shading."""
        return self.rasterizer.rasterize(pix, cam[..., 2], self.model.triangles, self.image_size,
                                         perspective_correct=self.shading != "release")

    def forward(self, coeffs: torch.Tensor) -> RenderOutput:
        """coeffs (N, layout.size) -> RenderOutput (see its docstring for shapes and ranges)."""
        cam, c = self.camera_vertices(coeffs)
        pix = project(cam, self.focal, self.image_size)
        normals = self.vertex_normals(cam, pix)
        albedo = self.model.albedo(c["tex"])
        colors = albedo * sh_shading(normals, c["gamma"], self.init_light)
        frags = self.rasterize(cam, pix)
        skin = self.model.skin_mask.to(colors.dtype).view(1, -1, 1).expand(colors.shape[0], -1, 1)
        attrs = self.rasterizer.interpolate(torch.cat([colors, skin], dim=-1), frags)  # (N, H, W, 4)
        mask = frags.mask.unsqueeze(1).to(colors.dtype)
        image = attrs[..., :3].clamp(0.0, 1.0).permute(0, 3, 1, 2)  # channels-last memory, (N, 3, H, W) shape
        skin_map = (attrs[..., 3:] > 0.5).to(colors.dtype).permute(0, 3, 1, 2)
        if frags.compact is None:  # the torch backend's background is exactly 0 already; others: enforce it
            image, skin_map = image * mask, skin_map * mask
        return RenderOutput(image=image, mask=mask, skin=skin_map, landmarks=pix[:, self.model.landmark_idx],
                            vertices=cam, triangles=self.model.triangles, colors=colors, albedo=albedo,
                            depth=frags.depth.unsqueeze(1), fragments=frags)

    @torch.no_grad()
    def fit_lighting(self, coeffs: torch.Tensor, image: torch.Tensor, keep: torch.Tensor, bands: int = 2,
                     ridge: float = 1e-3) -> torch.Tensor:
        """coeffs with their lighting refitted to `image`: the photometric term of eq. 3 minimised in closed form.

        With the geometry and albedo fixed, the rendered colour is linear in the SH coefficients (albedo x
        sum_k (gamma_k + init) B_k(n), interpolated linearly over each triangle), so each image and colour channel is
        one ridge regression over the rendered skin pixels (the model's skin region) where ``keep`` > 0.5:
        min ||X g - I||^2 + ridge * n_pixels * ||g - g_0||^2, g_0 = the given lighting. Only the first ``bands`` SH
        bands are refitted (1: ambient, 1 coefficient; 2: + directional, 4; 3: all 9); the rest keep their values.
        No pixel to fit leaves the lighting as it is.

        coeffs (N, K); image (N, 3, S, S) [0, 1] at this renderer's size; keep (N, 1, S, S) {0, 1}, 0 where the
        image does not show the face (an occlusion). Returns (N, K), a copy.
        """
        if bands not in (1, 2, 3):
            raise ValueError(f"fit_lighting: bands must be 1, 2 or 3, got {bands}")
        k = bands * bands
        out = self(coeffs.float())
        normals = self.vertex_normals(out.vertices, project(out.vertices, self.focal, self.image_size))
        basis = sh_basis(normals)  # (N, V, 9)
        design = self.rasterizer.interpolate(
            torch.cat([out.albedo[..., c:c + 1] * basis for c in range(3)], -1), out.fragments)  # (N, S, S, 27)
        n = coeffs.shape[0]
        full = design.reshape(n, -1, 3, 9).transpose(1, 2)  # (N, 3, P, 9)
        x = full[..., :k]
        gamma = self.layout.split(coeffs.float())["gamma"].reshape(n, 3, 9).clone()
        # pixels the render clips (colour outside [0, 1]) are not linear in the lighting: left out of the fit
        lit = out.image.reshape(n, 3, -1, 1)
        w = ((keep * out.skin) > 0.5).reshape(n, 1, -1, 1) & (lit > 0) & (lit < 1)
        w = w.all(1, keepdim=True).to(x.dtype)  # (N, 1, P, 1)
        # the bands that stay fixed contribute their part of every pixel: the fitted bands explain the rest
        y = image.float().reshape(n, 3, -1, 1) - full[..., k:] @ gamma[..., k:].unsqueeze(-1)  # (N, 3, P, 1)
        g0 = gamma[..., :k].clone()
        g0[..., 0] += self.init_light
        lam = ridge * w.sum((1, 2, 3)).clamp_min(1.0).view(n, 1, 1, 1)
        eye = torch.eye(k, dtype=x.dtype, device=x.device)
        a = (x * w).transpose(-1, -2) @ x + lam * eye  # (N, 3, k, k)
        b = (x * w).transpose(-1, -2) @ y + lam * g0.unsqueeze(-1)  # (N, 3, k, 1)
        g = torch.linalg.solve(a, b).squeeze(-1)
        g[..., 0] -= self.init_light
        gamma[..., :k] = g
        fitted = coeffs.float().clone()
        fitted[:, self.layout.slice("gamma")] = gamma.reshape(n, 27)
        return fitted
