"""The authors' released weights (face_de_mask: ``3D_it_500000.pkl``, ``inpaint_it_200000.pkl``) as our own exports.

``ReleaseConfig`` is the "release" preset: every inference setting the release's test.py uses (docs/formats.md sec. 5,
checked against face_de_mask test.py and utils/seg_util.py), each one overridable (configs/release.yaml, --set):

- input 256 px, framed by POS onto similarity_Lm3D_all.mat at 116/s exactly as test.py crops (data.align framing
  ``release_exact``: its crop-centre convention, 8-bit warp, 10 x 10 box blur outside the photo);
- m = sigmoid(seg) > 0.1, then two max filters of 5 and 3 pixels (= one 7 x 7 filter: ``mask_dilate: 3``);
- I_n = I_m (1 - m) + u, one channel u ~ U(0,1) over the whole image (noise convention ``release``);
- BFM_model_front.mat for the renderer (focal 1015 / 224 * 256, as the release's), with the release's shading
  convention (``shading: release``: normals of the projected mesh, area-weighted; screen-space interpolation;
  renderer.render.SHADINGS), so every tool that loads the converted exports renders I_3D as the release does.

``convert_release`` writes RUN/n3d.pt (read by train_inpaint.py's ``prior.n3d_checkpoint``, evaluate.py,
remove_mask.py, extract_coeffs.py --n3d) and RUN/inpaint.pt (evaluate.py --checkpoint or an ``ablations`` row,
remove_mask.py --checkpoint) carrying these settings. The generator's spectral-norm vectors u, v are carried over
as stored; in eval mode (every inference path) no power iteration changes them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from engine.config import ConfigError, path_field, to_dict
from engine.files import FileReadError

__all__ = ["ReleaseConfig", "convert_release", "load_release_config"]


@dataclass
class ReleaseConfig:
    n3d: str | None = path_field(kind="file")  # 3D_it_500000.pkl (FaceEncoder state dict, 'module.' keys)
    gen: str | None = path_field(kind="file")  # inpaint_it_200000.pkl (dict whose 'gen' entry is N_G)
    image_size: int = 256
    framing: str = "release_exact"  # data.align: release_exact (test.py's crop) | release (116/s) | deng | ffhq
    lm3d_path: str | None = path_field("BFM/similarity_Lm3D_all.mat", kind="file")
    bfm_path: str | None = path_field("BFM/BFM_model_front.mat", kind="file")  # None: the synthetic model (tests)
    backend: str = "torch"
    shading: str = "release"  # renderer.render.SHADINGS: the I_3D the released N_G was trained on
    mask_threshold: float = 0.1
    mask_dilate: int = 3  # pixels; the release's 5 x 5 then 3 x 3 max filters
    noise: str = "release"  # hole | release (tasks.exports.InferenceConfig)
    base_channels: int = 64  # N_G widths and residual blocks of the release
    n_res: int = 6

    def __post_init__(self):
        from tasks.common import MorphableConfig
        from tasks.exports import InferenceConfig

        InferenceConfig(noise=self.noise, framing=self.framing)  # validates both names
        MorphableConfig(shading=self.shading)
        if self.image_size % 32:
            raise ValueError(f"image_size must be a multiple of 32, got {self.image_size}")


def load_release_config(config: str | None, overrides: list[str]) -> ReleaseConfig:
    """The validated ReleaseConfig from a preset YAML (None: built-in) and KEY=VALUE overrides, files checked;
    raises a one-line ConfigError naming the key."""
    from engine.config import load_config, validate_paths

    cfg = load_config(ReleaseConfig, config, overrides)
    validate_paths(cfg)
    return cfg


def convert_release(cfg: ReleaseConfig, out_dir: str | Path) -> tuple[Path, Path]:
    """Read the two release files, load them strictly into ReconNet / Generator, write OUT/n3d.pt, OUT/inpaint.pt.

    Raises one-line FileNotFoundError / ValueError naming ``n3d`` / ``gen`` for a missing file or a key layout
    that does not match the release's.
    """
    from models.generator import key_map_authors_release as gen_key_map
    from models.recon3d import ReconNet, load_authors_release
    from models.weights import load_state_dict_file
    from tasks.common import MorphableConfig
    from tasks.exports import InferenceConfig, InpaintExport, N3DExport
    from tasks.generator import InpaintModelConfig, build_generator
    from tasks.n3d import Recon3DModelConfig
    from tasks.prior import PriorConfig

    if not cfg.n3d or not cfg.gen:
        raise ConfigError("release: both n3d (3D_it_500000.pkl) and gen (inpaint_it_200000.pkl) are needed")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    morph = MorphableConfig(bfm_path=cfg.bfm_path, backend=cfg.backend, shading=cfg.shading)
    crop = {"crop": cfg.framing, "lm3d_path": cfg.lm3d_path}
    meta = {"source": "authors' release (face_de_mask)", "n3d_file": str(cfg.n3d), "gen_file": str(cfg.gen)}

    n3d = ReconNet("resnet50", 257)
    try:
        load_authors_release(n3d, cfg.n3d, "n3d")
    except RuntimeError as e:  # strict load: shapes or keys that are not the release's
        raise FileReadError(f"n3d: {cfg.n3d} does not match the release's FaceEncoder: {str(e).splitlines()[0]}") \
            from None
    n3d_path = N3DExport(Recon3DModelConfig(backbone="resnet50"), morph, cfg.image_size, n3d.state_dict(), crop,
                         meta).save(out / "n3d.pt")

    model = InpaintModelConfig(base_channels=cfg.base_channels, n_res=cfg.n_res, use_3d_prior=True, composite=True)
    gen = build_generator(model)  # the paper's / release's two stride-2 stages (model.n_down default)
    sd = load_state_dict_file(cfg.gen, "gen", inner_key="gen")
    n_enc = cfg.n_res // 2
    try:
        gen.load_state_dict(gen_key_map(sd, n_enc, cfg.n_res - n_enc), strict=True)
    except RuntimeError as e:
        raise FileReadError(f"gen: {cfg.gen} does not match the release's Generator: {str(e).splitlines()[0]}") \
            from None
    prior = PriorConfig(source="n3d", n3d_checkpoint=str(n3d_path), mask_threshold=cfg.mask_threshold,
                        mask_dilate=cfg.mask_dilate)
    inference = InferenceConfig(noise=cfg.noise, framing=cfg.framing, lm3d_path=cfg.lm3d_path, crop=cfg.framing)
    inpaint_path = InpaintExport(model, to_dict(prior), morph, cfg.image_size, gen.state_dict(), inference,
                                 meta).save(out / "inpaint.pt")
    return n3d_path, inpaint_path
