"""The photo pipeline: a photo -> faces -> aligned crops -> N_3D -> edits -> N_G -> results pasted back.

remove_mask.py, the landmark benchmark, the web editor and the video path all run it:

    remover = MaskRemover.from_checkpoints("runs/inpaint_demo/inpaint.pt")
    image = read_image("photo.jpg")                           # (3, H, W) float [0, 1]
    framing = photo_framing(remover)                          # the model's own crop
    faces = prepare_faces(remover, image, find_faces(to_uint8(image)), refine=DEFAULT_REFINE, framing=framing)
    out = remove_from_photo(remover, image, faces, ["keep", "smile"], seed=0)
    out.images[1]                                             # (3, H, W): the photo with face(s) edited by "smile"

``prepare_faces`` aligns each face once and runs N_3D once (``PhotoFace.coeffs`` / ``.m``); ``remove_from_photo``
re-renders I_3D and re-runs N_G only, so an editor changes a slider, and an animation or a video changes the
coefficients (``edit_coefficients``, then ``dataclasses.replace(face, coeffs=...)``), without N_3D. Identical inputs,
edits and seed give identical photos; the noise is drawn in the aligned crop, so it follows the face.

Everything a caller prints or shows (the small-face warning, a rejected refinement, the synthetic-model note) is
data here: ``PhotoFace.notes`` and ``model_notes``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from data.align import (
    FRAMINGS,
    PASTE_MODES,
    AlignResult,
    align_face,
    alignment_template,
    get_framing,
    hard_region,
    paste_back,
    paste_hard,
    pasted_region,
    warp_affine,
)
from data.draw import draw_points
from data.io import to_uint8_hwc
from data.landmarks import eye_span, rescale_points
from tasks.common import resize_square
from tasks.removal import MaskRemover, Removal, apply_edit, available_edits, seam_region

# Eyes' outer corners closer than this many pixels (at a 256 px model input; scaled with the input) get a warning.
SMALL_FACE_SPAN = 64
DEFAULT_DETECTOR = "masked"  # data.detectors.MaskedFaceDetector (BENCHMARKS.md, "Masked faces")
DEFAULT_REFINE = 2  # N_3D refinement rounds for detected faces (BENCHMARKS.md, "Masked faces")
# presets in the order remove_mask.py's --variations takes them (those the model has)
PRESET_ORDER = ["keep", "neutral", "smile", "open_mouth", "pucker", "big_smile", "surprise", "brighter", "darker"]
ALIGN_CHOICES = ("meanface", *FRAMINGS)  # meanface: the morphable model's mean face, in the ffhq way


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) float [0, 1] -> (H, W, 3) uint8 RGB, rounding half up (what a detector takes)."""
    return to_uint8_hwc(image)


# ------------------------------------------------------------------------------------------------------- framing


@dataclass(frozen=True)
class PhotoFraming:
    """The crop a model's networks expect, resolved for photos.

    name: ffhq | meanface (the morphable model's mean face as the renderer frames it: models trained on
        SyntheticFaces) | deng | release.
    framing: the data.align framing that realises it (meanface is ffhq's similarity onto another template).
    template: (5, 2) target points as fractions of the crop side (meanface), else None.
    lm3d: (5, 3) reference points of the deng / release framings, else None.
    """

    name: str
    framing: str
    template: np.ndarray | None = None
    lm3d: np.ndarray | None = None

    def align(self, image: torch.Tensor, landmarks: np.ndarray, size: int) -> AlignResult:
        """image (3, H, W) float [0, 1], landmarks (68, 2) or (5, 2) photo pixels -> AlignResult at size S."""
        return align_face(image, landmarks, size, template=self.template, framing=self.framing, lm3d=self.lm3d)

    def target_points(self, size: int) -> np.ndarray | None:
        """(5, 2) crop pixels the 5 points are mapped onto (the similarity framings), None for deng / release."""
        return alignment_template(size, template=self.template) if self.framing == "ffhq" else None


def meanface_template(prior) -> np.ndarray:
    """(5, 2) the morphable model's mean face's 5 points as fractions of the renderer's crop (the framing of
    SyntheticFaces); prior: a tasks.prior.PriorModule (MaskRemover.prior)."""
    from data.align import five_points

    r = prior.renderer
    mean_lm = r.landmarks(prior.morph.layout.zeros(1, device=prior.device))[0].cpu().numpy()
    return (five_points(mean_lm) + 0.5) / r.image_size


def photo_framing(remover: MaskRemover, align: str | None = None) -> PhotoFraming:
    """The framing to crop photos in: ``align`` (ALIGN_CHOICES) or the model's own (its export's
    ``inference.framing``, else the crop it was trained on, ``inference.crop``; ffhq for exports that record
    neither). ValueError for deng / release without the 3D reference."""
    name = align or remover.framing or remover.inference.crop or "ffhq"
    if name not in ALIGN_CHOICES:
        raise ValueError(f"unknown framing {name!r}; valid: {', '.join(ALIGN_CHOICES)}")
    if name == "meanface":
        return PhotoFraming("meanface", "ffhq", template=meanface_template(remover.prior))
    if get_framing(name).needs_lm3d:
        if remover.lm3d is None:
            raise ValueError(f"--align {name} needs --lm3d BFM/similarity_Lm3D_all.mat (or an export carrying "
                             "inference.lm3d_path, as the release's)")
        return PhotoFraming(name, name, lm3d=remover.lm3d)
    return PhotoFraming(name, name)


def model_notes(remover: MaskRemover, framing: PhotoFraming) -> list[str]:
    """One-line notes about running this model on photos (e.g. a model trained on the synthetic faces)."""
    if remover.model.expression_names:  # the embedded synthetic morphable model: trained on SyntheticFaces
        return ["this checkpoint was trained on the embedded synthetic faces (e.g. the demo's); real photos need a "
                "model trained on real faces (configs/*/paper.yaml) or the authors' weights (--release-n3d, "
                "--release-gen)"]
    return []


# --------------------------------------------------------------------------------------------------------- edits


def preset_edits(k: int, extra: list[str] | None, model) -> list[str]:
    """The first k presets of PRESET_ORDER this morphable model supports, then the ``extra`` edits."""
    have = set(available_edits(model))
    return [e for e in PRESET_ORDER if e in have][:max(k, 0)] + list(extra or [])


def check_edits(edits: list[str], model) -> None:
    """Raise engine.config.ConfigError (one line) for the first edit this model cannot apply, before any work."""
    for e in edits:
        apply_edit(torch.zeros(1, model.layout.size), e, model)


def edit_coefficients(base: torch.Tensor, edits: list[str], model) -> torch.Tensor:
    """base (N, C) N_3D coefficients -> (N, K, C), one row per edit: the coefficients ``remove`` renders for those
    edits (an animation interpolates between these rows and passes each as ``coeffs`` with the edit ``keep``)."""
    return torch.stack([apply_edit(base, e, model) for e in edits], 1)


# --------------------------------------------------------------------------------------------------------- faces


def find_faces(image_u8: np.ndarray, detector=DEFAULT_DETECTOR, landmarks: str | None = None,
               threshold: float | None = None, insightface_root: str | None = None) -> list[np.ndarray]:
    """The faces of an (H, W, 3) uint8 RGB photo: (68, 2) or (5, 2) landmarks each, in photo pixels, largest first.

    detector: a data.detectors name (masked, dlib_cnn, dlib, insightface) or a LandmarkDetector; threshold: dlib's
    detection score threshold (the detector's own when None); landmarks: a landmark file (68 or 5 rows "x y")
    instead of a detector. ValueError / FileNotFoundError for an unknown detector or a bad file.
    """
    from data.detectors import get_detector
    from data.landmarks import load_landmarks_file

    if landmarks:
        return [load_landmarks_file(landmarks, counts=(68, 5))]
    if not isinstance(detector, str):
        return detector.detect(image_u8)
    if detector in ("dlib", "dlib_cnn", "masked"):
        kw = {} if threshold is None else {"threshold": threshold}
    else:
        kw = {"root": insightface_root} if insightface_root else {}
    return get_detector(detector, **kw).detect(image_u8)


@dataclass
class PhotoFace:
    """One face of a photo, aligned once and analysed once.

    found: (P, 2) the detector's (or file's) points, photo pixels (P = 68 or 5).
    landmarks: (P, 2) float32 the points the crop is aligned from (after refinement), photo pixels.
    image: (3, S, S) float [0, 1] the aligned crop at the model's size S.
    transform: (2, 3) float64 photo pixels -> crop pixels.
    crop_landmarks: (P, 2) ``landmarks`` in crop pixels.
    coeffs: (1, C) N_3D's coefficients of the crop (None until analysed); replace them to edit freely.
    m: (1, 1, S, S) {0, 1} N_3D's occlusion map (None until analysed).
    span: pixels between the outer eye corners in the photo (data.landmarks.eye_span).
    notes: one-line warnings for this face (small face, refinement rejected).
    """

    found: np.ndarray
    landmarks: np.ndarray
    image: torch.Tensor
    transform: np.ndarray
    crop_landmarks: np.ndarray
    coeffs: torch.Tensor | None = None
    m: torch.Tensor | None = None
    span: float = 0.0
    notes: list[str] = field(default_factory=list)


def refine_faces(remover: MaskRemover, image: torch.Tensor, faces: list[np.ndarray], rounds: int,
                 framing: PhotoFraming) -> tuple[list[np.ndarray], list[bool]]:
    """Each face re-located ``rounds`` times by N_3D (data.detectors.RefinedDetector) -> (landmarks (68, 2) each,
    rejected flags: True where the refinement moved the eyes too far and the given points are kept)."""
    from data.detectors import RefinedDetector

    if rounds <= 0:
        return [np.asarray(f, np.float32) for f in faces], [False] * len(faces)
    refiner = RefinedDetector(None, remover.predict_landmarks, remover.image_size, rounds,
                              template=framing.template, framing=framing.framing, lm3d=framing.lm3d)
    out, rejected = [], []
    for lm in faces:
        before = refiner.rejected
        out.append(refiner.refine(image, lm))
        rejected.append(refiner.rejected > before)
    return out, rejected


@torch.no_grad()
def analyze_faces(remover: MaskRemover, faces: list[PhotoFace]) -> list[PhotoFace]:
    """N_3D on each face's crop -> the faces with ``coeffs`` (1, C) and ``m`` (1, 1, S, S) filled (one face a batch,
    as ``remove`` runs it, so the numbers do not depend on how many faces a photo has)."""
    for f in faces:
        f.coeffs, f.m = remover.analyze(resize_square(f.image[None].to(remover.device).float(), remover.image_size))
    return faces


def prepare_faces(remover: MaskRemover, image: torch.Tensor, faces: list[np.ndarray], refine: int = 0,
                  framing: PhotoFraming | None = None, analyze: bool = True) -> list[PhotoFace]:
    """image (3, H, W) float [0, 1], faces: (68, 2) / (5, 2) landmarks each (find_faces) -> one PhotoFace each:
    refined ``refine`` rounds by N_3D, aligned into ``framing`` (default: the model's own, photo_framing), and, with
    ``analyze``, run through N_3D once."""
    framing = framing or photo_framing(remover)
    size = remover.image_size
    refined, rejected = refine_faces(remover, image, faces, refine, framing)
    min_span = SMALL_FACE_SPAN * size / 256
    out = []
    for i, (found, lm, rej) in enumerate(zip(faces, refined, rejected)):
        al = framing.align(image, lm, size)
        span = eye_span(lm)
        notes = []
        if span < min_span:
            notes.append(f"warning: face {i + 1} is small ({span:.0f} px between the outer eye corners, under "
                         f"{min_span:.0f} for this {size} px model): its result will be blurry")
        if rej:
            notes.append(f"note: N_3D refinement moved the eyes of face {i + 1} too far (a model that does not fit "
                         "this photo?): the detector's points are used there")
        crop_lm = al.landmarks.numpy() if isinstance(al.landmarks, torch.Tensor) else np.asarray(al.landmarks)
        out.append(PhotoFace(np.asarray(found, np.float32), np.asarray(lm, np.float32), al.image, al.transform,
                             crop_lm, span=span, notes=notes))
    return analyze_faces(remover, out) if analyze else out


# ----------------------------------------------------------------------------------------------------- removal


@dataclass
class PhotoResult:
    """remove_from_photo's output.

    images: K photos (3, H, W) float [0, 1], one per edit, every face replaced.
    region: (H, W) bool, the pixels that may differ from the input (the union over faces).
    removals: per face, its Removal in the crop (N = 1; images / i3d / m at the model's size) for debug views.
    faces: the PhotoFaces used (analysed); edits: the K edits.
    """

    images: list[torch.Tensor]
    region: torch.Tensor
    removals: list[Removal]
    faces: list[PhotoFace]
    edits: list[str]


@torch.no_grad()
def remove_from_photo(remover: MaskRemover, image: torch.Tensor, faces: list[PhotoFace] | list[np.ndarray],
                      edits: list[str] | None = None, seed: int = 0, paste: str = "feather",
                      post=None) -> PhotoResult:
    """image (3, H, W) float [0, 1]; faces: PhotoFaces (prepare_faces) or landmarks ((68, 2) / (5, 2), aligned in
    the model's framing, not refined); K edits (tasks.removal syntax, default ["keep"]) -> PhotoResult.

    N_3D runs only for faces not yet analysed; each face's results go back into the photo:
    ``paste="feather"``: inside N_3D's m grown by tasks.removal.SEAM_MARGIN, with paste_back's feathered seam outside
    m; ``paste="hard"``: test.py's composite (data.align.paste_hard: N_G's raw output, cut to 8 bits and warped
    back, taken whole inside the warped-back m), for exact parity with the authors' release. Faces are pasted in
    order (a later face over an earlier one where they overlap). ``post(i, removal, face) -> (K, 3, S, S)`` replaces
    face i's crop results before they are pasted (the video path's temporal fusion, tasks.fusion).
    """
    if paste not in PASTE_MODES:
        raise ValueError(f"paste must be one of {', '.join(PASTE_MODES)}, got {paste!r}")
    edits = list(edits or ["keep"])
    image = image.detach().cpu().float()
    faces = list(faces)
    if faces and not isinstance(faces[0], PhotoFace):
        faces = prepare_faces(remover, image, faces, analyze=False)
    if any(f.coeffs is None or f.m is None for f in faces):
        analyze_faces(remover, [f for f in faces if f.coeffs is None or f.m is None])
    results = [image.clone() for _ in edits]
    changes = torch.zeros(image.shape[-2:], dtype=torch.bool)
    removals = []
    for f in faces:
        res = remover(f.image[None], edits, seed=seed, coeffs=f.coeffs, m=f.m)
        removals.append(res)
        crops = res.images[0] if post is None else post(len(removals) - 1, res, f)
        if paste == "feather":
            region = seam_region(res.m[0:1])[0].cpu()  # all that changes in the photo
            for k in range(len(edits)):
                results[k] = paste_back(results[k], crops[k].cpu(), f.transform, mask=region)
            changes |= torch.from_numpy(pasted_region(region, f.transform, image.shape[-2:]))
        else:
            for k in range(len(edits)):
                raw = res.raw[0, k] if post is None else crops[k]  # equal to the raw output inside m
                results[k] = paste_hard(results[k], raw.cpu(), f.transform, res.m[0].cpu())
            changes |= torch.from_numpy(hard_region(res.m[0].cpu(), f.transform, image.shape[-2:]))
    return PhotoResult(results, changes, removals, faces, edits)


# ---------------------------------------------------------------------------------------------------- loading


def load_remover(checkpoint: str | None = None, n3d_checkpoint: str | None = None, device: str = "cpu",
                 release_n3d: str | None = None, release_gen: str | None = None,
                 release_config: str | None = None, overrides: list[str] | None = None,
                 lm3d: str | None = None, align: str | None = None) -> MaskRemover:
    """The MaskRemover of remove_mask.py's (and the editor's) options: an inpainting export (``checkpoint``, N_3D
    from ``n3d_checkpoint`` or the path it records), or the authors' two release files converted on the fly with
    the release preset (``release_config`` YAML, ``overrides`` KEY=VALUE). ``lm3d``: the 3D reference points for an
    export that does not record them (with ``align`` deng / release). One-line ValueError / FileNotFoundError /
    engine.config.ConfigError for bad options or files."""
    import tempfile

    if bool(release_n3d) != bool(release_gen):
        raise ValueError("--release-n3d and --release-gen go together")
    if (overrides or release_config) and not release_n3d:
        raise ValueError("--set / --release-config change the release preset: give --release-n3d and --release-gen")
    if release_n3d:
        from tasks.release import convert_release, load_release_config

        cfg = load_release_config(release_config, [*(overrides or []), f"n3d={release_n3d}", f"gen={release_gen}"])
        with tempfile.TemporaryDirectory(prefix="release_") as tmp:  # gone once the exports are loaded
            _, inpaint = convert_release(cfg, tmp)
            return MaskRemover.from_checkpoints(inpaint, n3d_checkpoint, device, key="--release-gen")
    inference = None
    if lm3d:
        inference = {"lm3d_path": lm3d, "framing": align if align != "meanface" else None}
    return MaskRemover.from_checkpoints(checkpoint, n3d_checkpoint, device, key="--checkpoint", inference=inference)


# ------------------------------------------------------------------------------------------------------ views


def debug_strip(image: torch.Tensor, face: PhotoFace, removal: Removal, framing: PhotoFraming,
                tile: int = 256) -> np.ndarray:
    """One face's debug row, (tile, 6 * tile, 3) uint8: the photo around the face with the detector's points (red)
    and the points used (green); the 5 points on the aligned crop (green) with the framing's target points (blue;
    none for deng / release, which have no 2D template); the aligned crop; m; I_3D; the first edit's output."""
    import cv2

    from data.align import five_points, transform_points

    def u8(t: torch.Tensor) -> np.ndarray:
        return cv2.resize(to_uint8_hwc(t.detach().cpu().float().expand(3, -1, -1)), (tile, tile),
                          interpolation=cv2.INTER_LINEAR)

    found, lm = face.found, face.landmarks
    # the photo around this face (its landmarks' box, 2.2x; black outside the photo)
    pts_all = np.concatenate([np.asarray(found, np.float64), np.asarray(lm, np.float64)])
    centre, side = (pts_all.min(0) + pts_all.max(0)) / 2, 2.2 * max(np.ptp(pts_all, 0).max(), 8.0)
    k = tile / side
    fit = np.array([[k, 0, tile / 2 - k * centre[0]], [0, k, tile / 2 - k * centre[1]]])
    det = to_uint8_hwc(warp_affine(image.permute(1, 2, 0).numpy(), fit, (tile, tile), border=cv2.BORDER_CONSTANT))
    draw_points(det, transform_points(found, fit), (255, 40, 40), 2)
    draw_points(det, transform_points(lm, fit), (40, 220, 40), 2)
    s = tile / face.image.shape[-1]
    five_crop = five_points(np.asarray(face.crop_landmarks)) if len(lm) == 68 else np.asarray(face.crop_landmarks)
    pts = u8(face.image)
    target = framing.target_points(face.image.shape[-1])
    if target is not None:
        draw_points(pts, rescale_points(target, s), (60, 90, 255), 4)
    draw_points(pts, rescale_points(five_crop, s), (40, 220, 40), 3)
    return np.concatenate([det, pts, u8(face.image), u8(removal.m[0]), u8(removal.i3d[0, 0]),
                           u8(removal.images[0, 0])], axis=1)
