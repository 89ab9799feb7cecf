"""Tests of the 3DMM face model and the differentiable renderer (CPU, small and fast)."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from scipy.io import savemat

from renderer.camera import euler_rotation, project
from renderer.lighting import sh_shading
from renderer.morphable import EXPRESSION_NAMES, CoeffLayout, MorphableModel
from renderer.raster import TorchRasterizer, get_rasterizer
from renderer.render import FaceRenderer

HAS_CUDA = torch.cuda.is_available()
try:
    import nvdiffrast.torch  # noqa: F401

    HAS_NVDIFFRAST = True
except Exception:  # ImportError or a failing extension build
    HAS_NVDIFFRAST = False


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # these tensors are small; on a shared, busy CPU, OpenMP spin-waits across threads cost far more than they save
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    return MorphableModel.synthetic(seed=0, n_vertices=1500, cache_dir=tmp_path_factory.mktemp("synth"))


# ------------------------------------------------------------------------------------------ layout

def test_coeff_layout_roundtrip():
    lay = CoeffLayout()
    assert lay.size == 257 and lay.names == ("id", "exp", "tex", "angle", "gamma", "trans")
    assert lay.slice("gamma") == slice(227, 254) and lay.slice("trans") == slice(254, 257)
    c = torch.randn(4, 257)
    parts = lay.split(c)
    assert {k: v.shape[1] for k, v in parts.items()} == {"id": 80, "exp": 64, "tex": 80, "angle": 3, "gamma": 27,
                                                          "trans": 3}
    assert torch.equal(lay.join(parts), c)
    assert lay.zeros(2).shape == (2, 257)
    small = CoeffLayout(id=10, exp=5, tex=7)
    assert small.size == 10 + 5 + 7 + 33
    assert torch.equal(small.join({"exp": torch.ones(3, 5)})[:, small.slice("exp")], torch.ones(3, 5))
    with pytest.raises(KeyError, match="valid"):
        lay.slice("pose")
    with pytest.raises(ValueError):
        lay.split(torch.zeros(1, 200))


# ------------------------------------------------------------------------------------------ synthetic model

def test_synthetic_determinism_and_cache(tmp_path):
    a = MorphableModel.synthetic(seed=3, n_vertices=900)
    b = MorphableModel.synthetic(seed=3, n_vertices=900, cache_dir=tmp_path)
    files = list(tmp_path.glob("*.npz"))
    assert len(files) == 1
    c = MorphableModel.synthetic(seed=3, n_vertices=900, cache_dir=tmp_path)  # loads the cache
    other = MorphableModel.synthetic(seed=4, n_vertices=900)
    for name, buf in a.named_buffers():
        assert torch.equal(buf, dict(b.named_buffers())[name]), name
        assert torch.equal(buf, dict(c.named_buffers())[name]), name
    assert torch.equal(a.mean_shape, other.mean_shape)  # the seed drives the random bases, not the mean face
    assert not torch.equal(a.id_base, other.id_base)


def test_synthetic_model_geometry(small_model):
    m = small_model
    assert m.layout == CoeffLayout()
    ms = m.mean_shape
    assert ms.abs().mean(0).max() < 1.0 and ms.mean(0).abs().max() < 1e-4  # recentred, BFM scale
    height = ms[:, 1].max() - ms[:, 1].min()
    assert 1.6 < height < 2.2
    assert m.triangles.min() >= 0 and m.triangles.max() < m.n_vertices
    assert m.landmark_idx.shape == (68,) and m.skin_mask.dtype == torch.bool and 0 < m.skin_mask.float().mean() < 1
    lm = ms[m.landmark_idx]
    # iBUG order sanity: image-left features have x < 0; chin (8) lowest; nose tip (30) most forward
    assert lm[36, 0] < lm[39, 0] < 0 < lm[42, 0] < lm[45, 0]
    assert lm[8, 1] == lm[:, 1].min() and lm[30, 2] == lm[:, 2].max()
    assert lm[19, 1] > lm[37, 1] > lm[30, 1] > lm[51, 1] > lm[57, 1] > lm[8, 1]
    normals = m.vertex_normals(ms[None])
    assert torch.allclose(normals.norm(dim=-1), torch.ones(1, m.n_vertices), atol=1e-5)
    assert normals[0, m.landmark_idx[30], 2] > 0.5  # the nose tip faces the camera
    alb = m.albedo(torch.zeros(1, 80))
    assert alb.min() >= 0 and alb.max() <= 1


def test_expressions_do_what_they_say(small_model):
    m = small_model
    r = FaceRenderer(m, 128)
    lay = m.layout
    neutral = lay.zeros(1)
    lm0 = r.landmarks(neutral)[0]
    op = lay.zeros(1)
    op[:, lay.slice("exp")] = m.expression("open_mouth")
    lm_open = r.landmarks(op)[0]
    gap0 = lm0[66, 1] - lm0[62, 1]
    gap1 = lm_open[66, 1] - lm_open[62, 1]
    assert abs(gap0) < 0.5 and gap1 > 8.0  # inner lips part by several pixels
    assert lm_open[8, 1] > lm0[8, 1] + 5.0  # chin goes down
    sm = lay.zeros(1)
    sm[0, lay.slice("exp").start + EXPRESSION_NAMES["smile"]] = 2.0
    lm_smile = r.landmarks(sm)[0]
    assert lm_smile[48, 1] < lm0[48, 1] - 2.0 and lm_smile[54, 1] < lm0[54, 1] - 2.0  # corners up (y down)
    assert (lm_smile[54, 0] - lm_smile[48, 0]) > (lm0[54, 0] - lm0[48, 0]) + 2.0  # and out
    assert EXPRESSION_NAMES["jaw_open"] == 0 and EXPRESSION_NAMES["smile"] == 1
    with pytest.raises(KeyError):
        m.expression("nope")


# ------------------------------------------------------------------------------------------ renderer

def test_render_shapes_and_ranges(small_model):
    r = FaceRenderer(small_model, 64)
    coeffs = small_model.sample_coeffs(3, generator=torch.Generator().manual_seed(0))
    out = r(coeffs)
    assert out.image.shape == (3, 3, 64, 64) and out.mask.shape == (3, 1, 64, 64) and out.skin.shape == (3, 1, 64, 64)
    assert out.image.min() >= 0 and out.image.max() <= 1
    assert set(out.mask.unique().tolist()) <= {0.0, 1.0} and 0.2 < out.mask.mean() < 0.9
    assert (out.image * (1 - out.mask)).abs().max() == 0  # background is 0
    assert (out.skin <= out.mask).all() and out.skin.sum() > 0
    assert out.landmarks.shape == (3, 68, 2)
    assert out.landmarks.min() > 0 and out.landmarks.max() < 63
    assert out.vertices.shape == (3, small_model.n_vertices, 3) and (out.vertices[..., 2] > 8).all()
    assert torch.equal(out.triangles, small_model.triangles)
    assert torch.allclose(r.landmarks(coeffs), out.landmarks, atol=1e-4)
    # a neutral frontal face is centred and left-right symmetric in the image
    lm = r.landmarks(small_model.layout.zeros(1))[0]
    assert abs(float(lm[30, 0]) - 31.5) < 0.5
    assert torch.allclose(lm[36, 0] - 31.5, 31.5 - lm[45, 0], atol=0.1)


def test_render_gradients_reach_all_coefficients(small_model):
    r = FaceRenderer(small_model, 48)
    coeffs = small_model.sample_coeffs(2, generator=torch.Generator().manual_seed(1)).requires_grad_(True)
    out = r(coeffs)
    (out.image.mean() + 1e-3 * out.landmarks.mean()).backward()
    grads = small_model.layout.split(coeffs.grad)
    for name, g in grads.items():
        assert torch.isfinite(g).all() and g.abs().sum() > 0, name


def test_fast_paths_match_their_definitions(small_model):
    # the renderer's layouts (basis products, one affine camera transform, normals from the mirrored camera-space
    # mesh, SH basis stacked per row) against the plain formulas: model -> R p + t -> camera, normals in the world
    m = copy.deepcopy(small_model).double()
    coeffs = m.sample_coeffs(3, generator=torch.Generator().manual_seed(2)).double()
    c = m.layout.split(coeffs)
    verts = m.shape(c["id"], c["exp"])
    plain = (c["id"] @ m.id_base.t() + c["exp"] @ m.exp_base.t()).view(3, -1, 3) + m.mean_shape
    assert torch.allclose(verts, plain, atol=1e-12)
    world = verts @ euler_rotation(c["angle"]).transpose(1, 2) + c["trans"][:, None]
    r = FaceRenderer(m, 32)
    out = r(coeffs)
    cam = torch.cat([world[..., :2], 10.0 - world[..., 2:]], -1)
    assert torch.allclose(out.vertices, cam, atol=1e-12)
    tri = m.triangles
    fn = torch.linalg.cross(world[:, tri[:, 1]] - world[:, tri[:, 0]], world[:, tri[:, 2]] - world[:, tri[:, 0]])
    fn = torch.nn.functional.normalize(fn, dim=-1)
    vn = torch.zeros_like(world).index_add_(1, tri.reshape(-1), fn.repeat_interleave(3, dim=1))
    vn = torch.nn.functional.normalize(vn, dim=-1)
    g = c["gamma"].view(3, 3, 9) + torch.tensor([0.8] + [0.0] * 8, dtype=torch.float64)
    nx, ny, nz = vn.unbind(-1)
    a, b, d = math.pi / math.sqrt(4 * math.pi), 2 * math.pi / math.sqrt(3) * math.sqrt(3 / (4 * math.pi)), \
        2 * math.pi / math.sqrt(8) * 3 * math.sqrt(5 / (12 * math.pi))
    basis = torch.stack([torch.full_like(nx, a), -b * ny, b * nz, -b * nx, d * nx * ny, -d * ny * nz,
                         0.5 * d / math.sqrt(3) * (3 * nz * nz - 1), -d * nx * nz, 0.5 * d * (nx * nx - ny * ny)], -1)
    colors = ((c["tex"] @ m.tex_base.t()).view(3, -1, 3) + m.mean_tex) / 255.0 * (basis @ g.transpose(1, 2))
    assert torch.allclose(out.colors, colors, atol=1e-10)
    # the custom backward of the basis product
    id_c = c["id"].clone().requires_grad_(True)
    exp_c = c["exp"].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda i, e: m.shape(i, e), (id_c, exp_c))


def test_camera_conventions():
    rot = euler_rotation(torch.tensor([[0.1, -0.4, 0.3]]))
    assert torch.allclose(rot @ rot.transpose(1, 2), torch.eye(3)[None], atol=1e-6)
    yaw = euler_rotation(torch.tensor([[0.0, math.pi / 2, 0.0]]))[0]
    assert torch.allclose(torch.tensor([0.0, 0.0, 1.0]) @ yaw.t(), torch.tensor([1.0, 0.0, 0.0]), atol=1e-6)
    pts = torch.tensor([[[0.0, 0.0, 10.0], [1.0, 1.0, 10.0]]])
    pix = project(pts, focal=1015.0, image_size=224)
    assert torch.allclose(pix[0, 0], torch.tensor([111.5, 111.5]))
    assert pix[0, 1, 0] > 111.5 and pix[0, 1, 1] < 111.5  # +x right, +y up -> smaller row
    # SH: gamma = 0 gives the ambient 0.8 * pi / sqrt(4 pi) for every normal
    n = torch.nn.functional.normalize(torch.randn(1, 5, 3), dim=-1)
    shade = sh_shading(n, torch.zeros(1, 27))
    assert torch.allclose(shade, torch.full_like(shade, 0.8 * math.pi / math.sqrt(4 * math.pi)))


# ------------------------------------------------------------------------------------------ BFM loader

def _write_bfm(path, n_id=80, n_exp=64, n_tex=80, drop=None):
    rng = np.random.default_rng(0)
    g = 6
    xs, ys = np.meshgrid(np.linspace(-0.8, 0.8, g), np.linspace(-0.9, 0.9, g))
    z = 0.5 - 0.3 * (xs ** 2 + ys ** 2)
    pts = np.stack([xs, ys, z], -1).reshape(-1, 3) + np.array([0.1, 0.2, 0.3])  # off-centre: recentring matters
    n = pts.shape[0]
    idx = np.arange(n).reshape(g, g)
    a, b, c, d = idx[:-1, :-1], idx[:-1, 1:], idx[1:, 1:], idx[1:, :-1]
    tri = np.concatenate([np.stack([a, b, c], -1).reshape(-1, 3), np.stack([a, c, d], -1).reshape(-1, 3)])
    data = {
        "meanshape": pts.reshape(1, -1).astype(np.float32),
        "idBase": (rng.normal(size=(3 * n, n_id)) * 1e-3).astype(np.float32),
        "exBase": (rng.normal(size=(3 * n, n_exp)) * 1e-3).astype(np.float32),
        "meantex": np.full((1, 3 * n), 180.0, np.float32),
        "texBase": (rng.normal(size=(3 * n, n_tex)) * 1e-2).astype(np.float32),
        "tri": (tri + 1).astype(np.float64),  # 1-based on disk, stored as double in the .mat
        "point_buf": np.zeros((n, 8), np.float64),
        "keypoints": (rng.integers(0, n, size=(1, 68)) + 1).astype(np.float64),
        "frontmask2_idx": (np.arange(n) + 1).reshape(-1, 1).astype(np.float64),
        "skinmask": np.ones((1, n), np.float64),
    }
    if drop:
        data.pop(drop)
    savemat(str(path), data)
    return pts, tri, data


def test_bfm_mat_loads_and_renders(tmp_path):
    path = tmp_path / "BFM_model_front.mat"
    pts, tri, data = _write_bfm(path, n_id=12, n_exp=5)
    m = MorphableModel.from_bfm(path)
    assert m.n_vertices == pts.shape[0] and torch.equal(m.triangles, torch.as_tensor(tri, dtype=torch.long))
    assert m.layout.sizes["id"] == 12 and m.layout.sizes["exp"] == 5 and m.layout.size == 12 + 5 + 80 + 33
    assert torch.equal(m.landmark_idx, torch.as_tensor(data["keypoints"][0] - 1, dtype=torch.long))
    assert torch.allclose(m.mean_shape, torch.as_tensor(pts - pts.mean(0), dtype=torch.float32), atol=1e-6)
    raw = MorphableModel.from_bfm(path, recenter=False)
    assert torch.allclose(raw.mean_shape, torch.as_tensor(pts, dtype=torch.float32), atol=1e-6)
    # xyz interleaved per vertex: basis row 3*k + 1 moves vertex k along y
    e = torch.zeros(1, 12)
    e[0, 0] = 1.0
    delta = m.shape(e, torch.zeros(1, 5)) - m.shape(torch.zeros(1, 12), torch.zeros(1, 5))
    assert torch.allclose(delta[0, 4, 1], torch.tensor(float(data["idBase"][3 * 4 + 1, 0])), atol=1e-6)
    assert torch.allclose(m.albedo(torch.zeros(1, 80)), torch.full((1, m.n_vertices, 3), 180.0 / 255.0))
    out = FaceRenderer(m, 32)(m.layout.zeros(2))
    assert out.mask.mean() > 0.3 and out.image.max() > 0.2
    assert not m.expression_names


def test_bfm_missing_key_and_file(tmp_path):
    path = tmp_path / "broken.mat"
    _write_bfm(path, drop="idBase")
    with pytest.raises(KeyError) as err:
        MorphableModel.from_bfm(path)
    msg = str(err.value)
    assert "idBase" in msg and str(path) in msg and "\n" not in msg
    with pytest.raises(FileNotFoundError, match="nothere.mat"):
        MorphableModel.from_bfm(tmp_path / "nothere.mat")


# ------------------------------------------------------------------------------------------ rasterizer

def _point_in_triangle(p, a, b, c):
    def cross(o, u, v):
        return (u[0] - o[0]) * (v[1] - o[1]) - (u[1] - o[1]) * (v[0] - o[0])

    d1, d2, d3 = cross(a, b, p), cross(b, c, p), cross(c, a, p)
    return (d1 >= 0 and d2 >= 0 and d3 >= 0) or (d1 <= 0 and d2 <= 0 and d3 <= 0)


@pytest.mark.parametrize("front", ["triangle", "square"])
def test_raster_coverage_and_occlusion(front):
    # square of two triangles (pixel centres 2..5 inside) and a triangle overlapping it
    verts = [[1.5, 1.5], [5.5, 1.5], [5.5, 5.5], [1.5, 5.5], [3.3, 0.4], [9.6, 3.2], [3.4, 8.7]]
    faces = torch.tensor([[0, 1, 2], [0, 2, 3], [4, 5, 6]])
    z_sq, z_tri = (1.0, 2.0) if front == "square" else (2.0, 1.0)
    pix = torch.tensor([verts])
    depth = torch.tensor([[z_sq] * 4 + [z_tri] * 3])
    frags = TorchRasterizer().rasterize(pix, depth, faces, (10, 12))
    tid = frags.tri_id[0]
    for i in range(10):
        for j in range(12):
            in_sq = 2 <= i <= 5 and 2 <= j <= 5
            in_tri = _point_in_triangle((j, i), *verts[4:])
            if in_sq and (front == "square" or not in_tri):
                assert tid[i, j] in (0, 1), (i, j)
                assert frags.depth[0, i, j] == pytest.approx(z_sq)
            elif in_tri:
                assert tid[i, j] == 2, (i, j)
                assert frags.depth[0, i, j] == pytest.approx(z_tri)
            else:
                assert tid[i, j] == -1 and frags.depth[0, i, j] == 0, (i, j)
    covered = tid >= 0
    assert torch.allclose(frags.bary[0][covered].sum(-1), torch.ones(int(covered.sum())))
    assert (frags.bary[0][~covered] == 0).all()


def test_raster_perspective_correct_and_batched():
    # one triangle, two batch items with different depths: interpolated depth equals the plane's depth
    pix = torch.tensor([[[0.2, 0.3], [14.7, 0.6], [0.4, 14.6]]]).repeat(2, 1, 1)
    depth = torch.tensor([[2.0, 4.0, 8.0], [3.0, 3.0, 3.0]])
    r = TorchRasterizer()
    frags = r.rasterize(pix, depth, torch.tensor([[0, 1, 2]]), 16)
    z_interp = r.interpolate(depth.unsqueeze(-1), frags)[..., 0]
    assert torch.allclose(z_interp, frags.depth, atol=1e-5)
    assert torch.allclose(frags.depth[1][frags.mask[1]], torch.tensor(3.0))
    small = TorchRasterizer(max_candidates=10)  # forces the per-image path
    assert torch.equal(small.rasterize(pix, depth, torch.tensor([[0, 1, 2]]), 16).tri_id, frags.tri_id)


def test_raster_int32_and_int64_bookkeeping_agree(small_model, monkeypatch):
    """The resolve step indexes candidates in int32 when it can; the int64 path gives the same triangles."""
    import renderer.raster as raster

    coeffs = small_model.sample_coeffs(3, generator=torch.Generator().manual_seed(4))
    out = FaceRenderer(small_model, 96)(coeffs)
    assert out.fragments.mask.float().mean() > 0.2
    pix = project(out.vertices, FaceRenderer(small_model, 96).focal, 96)
    monkeypatch.setattr(raster, "_INT32_LIMIT", 0)
    wide = TorchRasterizer().rasterize(pix, out.vertices[..., 2], small_model.triangles, 96)
    assert torch.equal(wide.tri_id, out.fragments.tri_id)


def test_interpolation_gradcheck():
    pix = torch.tensor([[[0.31, 0.22], [7.63, 0.47], [7.29, 7.71], [0.43, 7.38]]], dtype=torch.float64)
    depth = torch.tensor([[2.0, 2.5, 3.0, 2.2]], dtype=torch.float64)
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])
    attr = torch.rand(1, 4, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    # keep pixel centres away from the edges so that visibility is constant under gradcheck's perturbations
    ys, xs = np.mgrid[0:8, 0:8]
    centres = np.stack([xs.ravel(), ys.ravel()], 1).astype(float)
    p = pix[0].numpy()
    for a, b in ((0, 1), (1, 2), (2, 3), (3, 0), (0, 2)):
        ab = p[b] - p[a]
        dist = np.abs(ab[0] * (centres[:, 1] - p[a, 1]) - ab[1] * (centres[:, 0] - p[a, 0])) / np.linalg.norm(ab)
        assert dist.min() > 1e-3
    r = TorchRasterizer()

    def f(pix_, depth_, attr_):
        return r.interpolate(attr_, r.rasterize(pix_, depth_, faces, 8))

    assert torch.autograd.gradcheck(f, (pix.requires_grad_(True), depth.requires_grad_(True),
                                        attr.requires_grad_(True)), eps=1e-6, atol=1e-6)


def test_rasterizer_registry_and_nvdiffrast_on_cpu(small_model):
    with pytest.raises(ValueError, match="nvdiffrast, torch"):
        get_rasterizer("opengl")
    with pytest.raises(RuntimeError) as err:
        FaceRenderer(small_model, 32, backend="nvdiffrast")(small_model.layout.zeros(1))
    assert "backend: torch" in str(err.value) and "\n" not in str(err.value)


# ------------------------------------------------------------------------------------------ fitting

def test_fitting_recovers_pose_and_identity(small_model):
    torch.manual_seed(0)
    m = small_model
    r = FaceRenderer(m, 64)
    lay = m.layout
    k = 10  # the leading identity components, which change the rendered face most
    target = lay.zeros(1)
    parts = lay.split(target)
    parts["id"][0, :k] = torch.randn(k, generator=torch.Generator().manual_seed(2)).clamp(-1.5, 1.5)
    parts["angle"][0] = torch.tensor([math.radians(4.0), math.radians(-10.0), math.radians(3.0)])
    parts["trans"][0] = torch.tensor([0.04, -0.03, 0.0])
    with torch.no_grad():
        ref = r(target)
    ids = torch.zeros(1, k, requires_grad=True)
    pose = torch.zeros(1, 6, requires_grad=True)
    opt = torch.optim.Adam([{"params": [ids], "lr": 0.08}, {"params": [pose], "lr": 0.01}])

    def loss_of(ids_, pose_):
        c = lay.join({"id": torch.cat([ids_, torch.zeros(1, lay.sizes["id"] - k)], 1), "angle": pose_[:, :3],
                      "trans": pose_[:, 3:]})
        out = r(c)
        photo = ((out.image - ref.image) ** 2).sum(1).mean()
        lmk = ((out.landmarks - ref.landmarks) ** 2).sum(-1).mean() / 64.0
        return photo + lmk

    with torch.no_grad():
        loss0 = float(loss_of(ids, pose))
    err_id0 = float((ids - parts["id"][:, :k]).norm())
    err_pose0 = float((pose[:, :3] - parts["angle"]).abs().max())
    for _ in range(120):
        loss = loss_of(ids, pose)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        loss1 = float(loss_of(ids, pose))
    err_id1 = float((ids - parts["id"][:, :k]).norm())
    err_pose1 = float((pose[:, :3] - parts["angle"]).abs().max())
    assert loss1 < loss0 / 10, (loss0, loss1)
    assert err_id1 < 0.6 * err_id0, (err_id0, err_id1)
    assert err_pose1 < 0.25 * err_pose0, (err_pose0, err_pose1)


def test_lighting_fit_recovers_the_lighting_from_the_visible_skin(small_model):
    """FaceRenderer.fit_lighting: a closed-form photometric fit of the first SH bands; from a wrong lighting it
    recovers the true one on the skin it may see, ignores pixels outside `keep`, and keeps everything else."""
    r = FaceRenderer(small_model, 64)
    gen = torch.Generator().manual_seed(3)
    truth = small_model.sample_coeffs(2, generator=gen)
    image = r(truth).image
    lay = small_model.layout
    wrong = truth.clone()
    g = lay.split(wrong)["gamma"].view(2, 3, 9)
    g[:, :, 0] += torch.tensor([[0.15, -0.1, 0.05], [-0.2, 0.1, 0.0]])  # ambient, per colour
    g[:, :, 1:4] += 0.1  # direction
    keep = torch.ones(2, 1, 64, 64)
    keep[:, :, 40:] = 0  # the lower face is occluded
    scribbled = image.clone()
    scribbled[:, :, 40:] = torch.rand(2, 3, 24, 64)  # what lies under the occlusion cannot matter
    fit = r.fit_lighting(wrong, scribbled, keep, bands=2, ridge=1e-6)
    gf, gt = lay.split(fit)["gamma"].view(2, 3, 9), lay.split(truth)["gamma"].view(2, 3, 9)
    assert (gf[:, :, :4] - gt[:, :, :4]).abs().max() < 2e-3
    assert torch.equal(gf[:, :, 4:], lay.split(wrong)["gamma"].view(2, 3, 9)[:, :, 4:])  # band 2 as given
    others = [i for i in range(lay.size) if not lay.slice("gamma").start <= i < lay.slice("gamma").stop]
    assert torch.equal(fit[:, others], wrong[:, others])
    assert (r(fit).image - image).abs().max() < 5e-3
    # nothing to see: the lighting stays; a large ridge keeps it close to the given one
    assert torch.allclose(r.fit_lighting(wrong, image, torch.zeros_like(keep)), wrong, atol=1e-5)
    far = r.fit_lighting(wrong, image, keep, bands=2, ridge=1e3)
    assert (far - wrong).abs().max() < 1e-2 < (fit - wrong).abs().max()
    with pytest.raises(ValueError, match="bands must be 1, 2 or 3"):
        r.fit_lighting(wrong, image, keep, bands=4)


# ------------------------------------------------------------------------------------------ CUDA / nvdiffrast

@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")
def test_torch_backend_cuda_matches_cpu(small_model):
    coeffs = small_model.sample_coeffs(2, generator=torch.Generator().manual_seed(5))
    cpu = FaceRenderer(small_model, 64)
    c1 = coeffs.clone().requires_grad_(True)
    out_cpu = cpu(c1)
    out_cpu.image.sum().backward()
    gpu_model = MorphableModel.synthetic(seed=0, n_vertices=1500).cuda()
    gpu = FaceRenderer(gpu_model, 64)
    c2 = coeffs.cuda().requires_grad_(True)
    out_gpu = gpu(c2)
    out_gpu.image.sum().backward()
    agree = (out_cpu.fragments.tri_id == out_gpu.fragments.tri_id.cpu()).float().mean()
    assert agree > 0.995
    same = (out_cpu.fragments.tri_id == out_gpu.fragments.tri_id.cpu()).unsqueeze(1).expand_as(out_cpu.image)
    assert torch.allclose(out_cpu.image[same], out_gpu.image.cpu()[same], atol=1e-4)
    assert torch.allclose(c1.grad, c2.grad.cpu(), rtol=0.05, atol=1e-3 * float(c1.grad.abs().max()))


@pytest.mark.cuda
@pytest.mark.skipif(not (HAS_CUDA and HAS_NVDIFFRAST), reason="needs CUDA and the nvdiffrast package")
def test_backends_agree(small_model):
    model = MorphableModel.synthetic(seed=0, n_vertices=1500).cuda()
    coeffs = model.sample_coeffs(2, generator=torch.Generator().manual_seed(6)).cuda()
    outs, grads = {}, {}
    for name in ("torch", "nvdiffrast"):
        c = coeffs.clone().requires_grad_(True)
        out = FaceRenderer(model, 96, backend=name)(c)
        out.image.sum().backward()
        outs[name], grads[name] = out, c.grad
    same = outs["torch"].fragments.tri_id == outs["nvdiffrast"].fragments.tri_id
    assert same.float().mean() > 0.99
    m = same.unsqueeze(1).expand_as(outs["torch"].image)
    assert torch.allclose(outs["torch"].image[m], outs["nvdiffrast"].image[m], atol=1e-3)
    g1, g2 = grads["torch"], grads["nvdiffrast"]
    cos = torch.nn.functional.cosine_similarity(g1.flatten(), g2.flatten(), dim=0)
    assert cos > 0.98


# ------------------------------------------------------------------------------------------ misc

def test_model_pickles_after_use(small_model):
    import copy
    import pickle

    r = FaceRenderer(small_model, 32)
    c = small_model.sample_coeffs(1, generator=torch.Generator().manual_seed(3))
    img = r(c).image  # builds the cached sparse normal operators
    clone = pickle.loads(pickle.dumps(small_model))
    assert torch.equal(FaceRenderer(clone, 32)(c).image, img)
    assert torch.equal(FaceRenderer(copy.deepcopy(small_model), 32)(c).image, img)


def test_scripts_smoke(tmp_path):
    import json

    from tests.helpers import run_script

    out = tmp_path / "grid.png"
    run_script("scripts/render_samples.py", "--out", out, "--n", "2", "--size", "48", "--n-vertices", "900")
    assert out.is_file() and out.stat().st_size > 0
    r = run_script("scripts/bench_renderer.py", "--quick", "--batch", "2", "--size", "48")
    res = json.loads(r.stdout)
    assert res["backends"]["torch"]["forward_ms_per_face"] > 0


# ------------------------------------------------------------------------------------------ shading conventions

# Sum and sum of squares (float64) of the outputs of main's renderer at c915646 (before the shading option): synthetic
# model seed 0 (default mesh), 2 faces from sample_coeffs(seed 3, max_yaw_deg=40), 64 px. Hashes of the bits were
# machine-dependent (another CPU's float32 kernels round differently: c915646 and this code agree bit for bit on each
# machine, but not across machines), so the check is to 1e-6 relative: any change of the shading moves these by far
# more.
_DENG_AT_MAIN = {"image": (6591.241128869355, 4340.672840436), "colors": (22179.813018992543, 14414.681991508714),
                 "depth": (34663.40589809418, 345260.1372322173), "landmarks": (9047.897296905518, 330602.75611800427),
                 "mask": (3481.0, 3481.0)}


def test_deng_shading_is_unchanged():
    model = MorphableModel.synthetic(seed=0)
    coeffs = model.sample_coeffs(2, generator=torch.Generator().manual_seed(3), max_yaw_deg=40)
    for r in (FaceRenderer(model, 64), FaceRenderer(model, 64, shading="deng")):
        out = r(coeffs)
        for k, (total, squares) in _DENG_AT_MAIN.items():
            a = getattr(out, k).detach().double()
            assert float(a.sum()) == pytest.approx(total, rel=1e-6), k
            assert float((a * a).sum()) == pytest.approx(squares, rel=1e-6), k
    with pytest.raises(ValueError, match="valid: deng, release"):
        FaceRenderer(model, 64, shading="pytorch3d")


def _tent_model():
    """A 3 x 3 grid with a raised, off-centre peak and unequal triangles: a mesh on which unit vs area-weighted
    face normals, 3D vs projected normals, and perspective-correct vs screen-space interpolation all differ."""
    xs = np.array([-0.9, -0.2, 0.8])
    ys = np.array([-0.7, 0.1, 0.9])
    pts = np.array([[x, y, 0.0] for y in ys for x in xs])
    pts[4, 2] = 0.7  # the peak, toward the camera
    pts[:, 2] += np.array([0.0, 0.3, -0.2, 0.1, 0.0, -0.4, 0.2, 0.0, 0.5])
    tri = []
    for r in range(2):
        for c in range(2):
            a, b, d, e = 3 * r + c, 3 * r + c + 1, 3 * (r + 1) + c, 3 * (r + 1) + c + 1
            tri += [[a, b, e], [a, e, d]]  # counter-clockwise seen from +z (x right, y up)
    v = len(pts)
    tex = np.linspace(120, 230, 3 * v).reshape(v, 3)
    return MorphableModel(pts, np.zeros((3 * v, 1)), np.zeros((3 * v, 1)), tex, np.zeros((3 * v, 1)),
                          np.array(tri), np.zeros(68, np.int64))


def _tent_coeffs(model):
    gamma = np.zeros((3, 9))
    gamma[:, 0] = [0.1, 0.0, -0.1]
    gamma[:, 1:4] = [0.3, 0.4, -0.2]  # a strong directional light: colours follow the normals
    gamma[:, 4:] = [0.1, -0.15, 0.2, 0.05, -0.1]
    parts = {"angle": torch.tensor([[0.35, 0.6, 0.1]]), "gamma": torch.tensor(gamma.reshape(1, 27)),
             "trans": torch.tensor([[0.1, -0.05, 4.0]])}  # 6 dm from the camera: strong perspective
    return model.layout.join({k: p.float() for k, p in parts.items()})


def _sh_by_hand(n):
    """The 9 SH basis values at unit normal n (docs/formats.md sec. 1), float64."""
    a = (math.pi, 2 * math.pi / math.sqrt(3), 2 * math.pi / math.sqrt(8))
    c = (1 / math.sqrt(4 * math.pi), math.sqrt(3) / math.sqrt(4 * math.pi), 3 * math.sqrt(5) / math.sqrt(12 * math.pi))
    x, y, z = n
    k1, k2 = a[1] * c[1], a[2] * c[2]
    return np.array([a[0] * c[0], -k1 * y, k1 * z, -k1 * x, k2 * x * y, -k2 * y * z,
                     0.5 * k2 / math.sqrt(3) * (3 * z * z - 1), -k2 * x * z, 0.5 * k2 * (x * x - y * y)])


def _release_render_by_hand(model, coeffs, size):
    """The release's convention from its description, in float64 loops: world = R p + t; camera at distance 10;
    projected mesh (f x / depth, f y / depth, f z_world / 10); face normals cross(b - a, c - a) of that mesh summed
    per vertex, normalised; SH x albedo per vertex; per pixel centre the triangle with the smallest screen-linear
    depth among those containing it, colours blended by screen-space barycentrics, clamped to [0, 1]."""
    c = coeffs[0].double().numpy()
    lay = model.layout
    ang, gam, tr = c[lay.slice("angle")], c[lay.slice("gamma")].reshape(3, 9), c[lay.slice("trans")]
    cx, sx, cy, sy, cz, sz = math.cos(ang[0]), math.sin(ang[0]), math.cos(ang[1]), math.sin(ang[1]), \
        math.cos(ang[2]), math.sin(ang[2])
    rot = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]]) @ np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]]) \
        @ np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    world = model.mean_shape.double().numpy() @ rot.T + tr
    depth = 10.0 - world[:, 2]
    f, ctr = 1015.0 / 224.0 * size, (size - 1) / 2.0
    u, v = f * world[:, 0] / depth + ctr, ctr - f * world[:, 1] / depth
    proj = np.stack([f * world[:, 0] / depth, f * world[:, 1] / depth, f * world[:, 2] / 10.0], 1)
    tri = model.triangles.numpy()
    normals = np.zeros_like(proj)
    for a, b, d in tri:
        fn = np.cross(proj[b] - proj[a], proj[d] - proj[a])
        for k in (a, b, d):
            normals[k] += fn
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    albedo = model.mean_tex.double().numpy() / 255.0
    light = gam + np.array([0.8] + [0.0] * 8)
    colors = np.stack([albedo[i] * (light @ _sh_by_hand(normals[i])) for i in range(len(albedo))])
    image = np.zeros((size, size, 3))
    for i in range(size):
        for j in range(size):
            best = None
            for a, b, d in tri:
                (xa, ya), (xb, yb), (xd, yd) = (u[a], v[a]), (u[b], v[b]), (u[d], v[d])
                area = (xb - xa) * (yd - ya) - (yb - ya) * (xd - xa)
                s = ((j - xa) * (yd - ya) - (i - ya) * (xd - xa)) / area
                t = ((xb - xa) * (i - ya) - (yb - ya) * (j - xa)) / area
                w = np.array([1 - s - t, s, t])
                if (w < 0).any():
                    continue
                z = w @ depth[[a, b, d]]
                if best is None or z < best[0]:
                    best = (z, w @ colors[[a, b, d]])
            if best is not None:
                image[i, j] = np.clip(best[1], 0, 1)
    return normals, image


def test_release_shading_matches_a_hand_computation():
    model = _tent_model()
    coeffs = _tent_coeffs(model)
    size = 32
    want_normals, want_image = _release_render_by_hand(model, coeffs, size)
    r = FaceRenderer(model, size, shading="release")
    out = r(coeffs)
    pix = project(out.vertices, r.focal, size)
    got_normals = r.vertex_normals(out.vertices, pix)[0].double().numpy()
    np.testing.assert_allclose(got_normals, want_normals, atol=2e-6)
    assert 200 < out.mask.sum() < size * size - 50  # the tent and its silhouette are in the image
    np.testing.assert_allclose(out.image[0].permute(1, 2, 0).double().numpy(), want_image, atol=2e-6)
    # the mesh tells the conventions apart: Deng's normals and interpolation give another image
    deng = FaceRenderer(model, size)(coeffs)
    deng_normals = FaceRenderer(model, size).vertex_normals(deng.vertices, pix)[0].double().numpy()
    angle = np.degrees(np.arccos(np.clip((deng_normals * want_normals).sum(1), -1, 1)))
    assert angle.max() > 5.0
    assert (deng.image - out.image).abs().max() > 0.02
    # each convention alone matters: screen-space barycentrics differ from perspective-correct ones here
    frags_pc = r.rasterizer.rasterize(pix, out.vertices[..., 2], model.triangles, size)
    assert (frags_pc.bary - out.fragments.bary).abs().max() > 0.01


def test_release_shading_gradients_and_fit_lighting(small_model):
    r = FaceRenderer(small_model, 48, shading="release")
    coeffs = small_model.sample_coeffs(2, generator=torch.Generator().manual_seed(8))
    c = coeffs.clone().requires_grad_(True)
    r(c).image.sum().backward()
    lay = small_model.layout
    for name in ("id", "exp", "tex", "angle", "gamma", "trans"):
        assert c.grad[:, lay.slice(name)].abs().sum() > 0, name
    # the closed-form lighting fit uses the same normals: the render's own lighting is a fixed point
    target = r(coeffs)
    fitted = r.fit_lighting(coeffs, target.image, torch.ones_like(target.mask), bands=3, ridge=1e-6)
    assert torch.allclose(fitted[:, lay.slice("gamma")], coeffs[:, lay.slice("gamma")], atol=2e-3)


def test_morphable_config_selects_the_shading():
    from tasks.common import MorphableConfig, build_renderer

    assert build_renderer(MorphableConfig(synthetic_vertices=1500), 32, "cpu").shading == "deng"
    assert build_renderer(MorphableConfig(synthetic_vertices=1500, shading="release"), 32, "cpu").shading == "release"
    with pytest.raises(ValueError, match="morphable.shading") as e:
        MorphableConfig(shading="pytorch3d")
    assert "\n" not in str(e.value)


@pytest.mark.cuda
@pytest.mark.skipif(not (HAS_CUDA and HAS_NVDIFFRAST), reason="needs CUDA and the nvdiffrast package")
def test_nvdiffrast_release_shading_matches_torch():
    model = MorphableModel.synthetic(seed=0, n_vertices=1500).cuda()
    coeffs = model.sample_coeffs(2, generator=torch.Generator().manual_seed(6)).cuda()
    outs = {name: FaceRenderer(model, 96, backend=name, shading="release")(coeffs) for name in ("torch", "nvdiffrast")}
    same = outs["torch"].fragments.tri_id == outs["nvdiffrast"].fragments.tri_id
    assert same.float().mean() > 0.99
    m = same.unsqueeze(1).expand_as(outs["torch"].image)
    assert torch.allclose(outs["torch"].image[m], outs["nvdiffrast"].image[m], atol=1e-3)
    b1, b2 = outs["torch"].fragments.bary, outs["nvdiffrast"].fragments.bary
    assert torch.allclose(b1[same], b2[same], atol=1e-3)
