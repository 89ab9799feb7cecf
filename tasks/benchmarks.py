"""The measurements behind scripts/benchmark.py and BENCHMARKS.md, one function a section: data, rendering, N_3D and
N_G/N_D training, inference, the editor's slider change, evaluation, the photo detectors and the video path, with
FLOPs and the paper schedule's projected hours. Networks have random weights (speed does not depend on them)."""

from __future__ import annotations

import gc
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]  # the repository root (detector runs start a fresh process there)

PAPER_STEPS = {"n3d": 500_000, "inpaint": 200_000}
PAPER_BATCH = 8
PAPER_TEST_IMAGES = 1000
BF16_TFLOPS = {"H100": 989.0, "H200": 989.0}  # dense bf16 spec figures; the measured rate is what counts


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, iters: int, warmup: int = 1) -> float:
    """Median seconds per call of fn after warm-up."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def count_flops(fn) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


# ---------------------------------------------------------------------------------------------------------- parts
def bench_synth(quick: bool) -> dict:
    from tasks.speed import synthesis_speed

    return synthesis_speed(quick=quick)


def bench_loader(quick: bool, workers: int = 2) -> dict:
    """Masked pairs per second through a DataLoader with 0 and ``workers`` worker processes, cold and warm."""
    from data.pairs import MaskedPairs
    from data.synth import MaskedPairSynthesizer
    from data.synthetic import SyntheticFaces

    n = 32 if quick else 128
    faces = SyntheticFaces(n, 256)
    faces.prerender()
    pairs = MaskedPairs(faces, MaskedPairSynthesizer(), seed=0)
    out = {}
    for w in (0, workers):
        # cold: each process builds the procedural library's shapes and textures on first use (~3.5 ms per item,
        # what a training epoch's fresh workers pay at first); warm: the same items again, library cached
        loader = torch.utils.data.DataLoader(pairs, batch_size=8, num_workers=w, persistent_workers=w > 0)
        for state in ("cold", "warm"):
            t = time.perf_counter()
            count = sum(b["image"].shape[0] for b in loader)
            out[f"items_per_s_{w}_workers_{state}"] = count / (time.perf_counter() - t)
    return out


def bench_renderer(device: torch.device) -> dict:
    from tasks.speed import renderer_speed

    return renderer_speed(device=str(device), quick=False)  # BFM-sized mesh always: a few seconds even on a CPU


def _train_settings(device, batch: int, compile_mode: str | None) -> dict:
    """The `train` section both training benchmarks share (compile_mode None = eager)."""
    return {"batch_size": batch, "device": device.type, "channels_last": device.type == "cuda",
            "compile": compile_mode is not None, "compile_mode": compile_mode or "default"}


def _n3d_task(device, size=224, batch=8, compile_mode=None):
    from engine.config import build_dataclass
    from models.arcface import ArcFace
    from tasks.recon3d import Recon3DExperiment, Recon3DTask

    cfg = build_dataclass(Recon3DExperiment, {
        "data": {"image_size": size, "train": [{"kind": "synthetic", "num": batch}],
                 "val": [{"kind": "synthetic", "num": batch, "offset": 10**6}]},
        "model": {"backbone": "resnet50"}, "loss": {"w_id": 0.0},
        "train": _train_settings(device, batch, compile_mode)})
    task = Recon3DTask(cfg, device)
    task.arcface = ArcFace("r50").to(device)  # random weights: the identity loss costs the same
    cfg.loss.w_id = 0.1
    return task


def _batch(task, batch: int, device):
    from tasks.common import iterate

    return next(iterate(task.train_set(), batch, device=device))


def bench_train(stage: str, device: torch.device, quick: bool, batch: int = PAPER_BATCH,
                compile_mode: str | None = None) -> dict:
    """Training images/s and FLOPs per image of one stage at the paper's settings (``compile_mode``: train.compile
    with that torch.compile mode; the FLOPs are then not counted, FlopCounterMode does not see inside compiled
    graphs)."""
    from engine.loop import StepContext

    if stage == "n3d":
        task = _n3d_task(device, 224, batch, compile_mode)
    else:
        task = _inpaint_task(device, batch, compile_mode=compile_mode)
    b = _batch(task, batch, device)
    ctx = StepContext(task.cfg.train, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    sec = timed(lambda: task.train_step(b, ctx), device, iters=2 if quick else 5, warmup=3 if compile_mode else 1)
    out = {"batch": batch, "s_per_step": sec, "images_per_s": batch / sec, "compiled": compile_mode or False,
           "paper_hours": PAPER_STEPS[stage] * PAPER_BATCH / (batch / sec) / 3600}
    if device.type == "cuda":
        out["peak_mem_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    if compile_mode:
        return out
    r1 = getattr(task.cfg.loss, "w_r1", 0.0)
    if r1:  # FlopCounterMode cannot follow autograd.grad: the R1 double backward is left out of the count
        task.cfg.loss.w_r1 = 0.0
    flops = count_flops(lambda: task.train_step(b, ctx)) / batch
    task.cfg.loss.w_r1 = r1
    out.update(gflops_per_image=flops / 1e9, flops_exclude_r1=bool(r1))
    for gpu, tf in BF16_TFLOPS.items():
        out[f"floor_images_per_s_{gpu}_bf16"] = tf * 1e12 / flops
    return out


def _inpaint_task(device, batch=8, size=256, compile_mode=None):
    import tempfile

    from engine.config import build_dataclass
    from tasks.inpaint import InpaintExperiment, InpaintTask

    n3d = _n3d_task(device, 224, 2)
    path = n3d.export(Path(tempfile.mkdtemp()) / "n3d.pt")
    cfg = build_dataclass(InpaintExperiment, {
        "data": {"image_size": size, "train": [{"kind": "synthetic", "num": batch}],
                 "val": [{"kind": "synthetic", "num": batch, "offset": 10**6}]},
        "prior": {"n3d_checkpoint": str(path)}, "loss": {"w_id": 0.0},
        "train": _train_settings(device, batch, compile_mode)})
    return InpaintTask(cfg, device)


def bench_inference(device: torch.device, quick: bool, batch: int = 8) -> dict:
    from tasks.removal import MaskRemover

    task = _inpaint_task(device, batch)
    remover = MaskRemover(task.prior, task.g_ema, True, True)
    b = _batch(task, batch, device)
    sec = timed(lambda: remover(b["masked_image"], ["keep"]), device, iters=2 if quick else 5)
    return {"batch": batch, "images_per_s": batch / sec}


EDITOR_MODELS = {  # (model size, N_G settings) of the editor's two latency goals (N_D is not used at inference)
    "demo": (64, {"base_channels": 16, "n_res": 4, "n_down": 1, "prior_blend": True}),  # configs/inpaint/demo.yaml
    "paper": (256, {"base_channels": 64, "n_res": 6}),  # the paper's N_G at the paper's 256 px
}


def bench_editor(device: torch.device, quick: bool, size: int = 256) -> dict:
    """One slider change of the web editor (tasks.editor.EditorSession.render: I_3D + N_G + paste-back) on a
    masked synthetic face photo of ``size`` px, with the demo model (64 px, as trained) and the paper-size N_G at 256
    px (random weights, N_3D ran once before). Median CPU ms on one thread (load-insensitive) of the whole render and
    of its parts timed apart: render (I_3D), N_G, paste-back, PNG encoding of the page's four views; and the median
    wall ms of the render on all threads."""
    import tempfile

    from tasks.editor import gallery_faces

    n3d = _n3d_task(device, 224, 2).export(Path(tempfile.mkdtemp()) / "n3d.pt")
    face = gallery_faces(1, size=size)[0]
    out = {"image_size": size, "threads": torch.get_num_threads()}
    for name, (model_size, model) in EDITOR_MODELS.items():
        out[name] = {"model_size": model_size,
                     **_editor_latency(device, n3d, model, face, model_size, 3 if quick else 10)}
    return out


def _thread_ms(fn, iters: int) -> float:
    """Median CPU ms of fn on this thread with torch on 1 thread: what an idle core would take, whatever else the
    machine is doing (wall times on a loaded machine are not)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        fn()
        times = []
        for _ in range(iters):
            t = time.thread_time()
            fn()
            times.append(time.thread_time() - t)
    finally:
        torch.set_num_threads(threads)
    return sorted(times)[len(times) // 2] * 1e3


def _editor_latency(device, n3d: Path, model: dict, face: dict, size: int, iters: int) -> dict:
    import io

    import numpy as np
    from PIL import Image

    from data.align import paste_back
    from engine.config import build_dataclass
    from tasks.editor import EditorSession, SliderState
    from tasks.inpaint import InpaintExperiment, InpaintTask
    from tasks.prior import noised
    from tasks.removal import MaskRemover

    cfg = build_dataclass(InpaintExperiment, {
        "data": {"image_size": size, "train": [{"kind": "synthetic", "num": 2}],
                 "val": [{"kind": "synthetic", "num": 2, "offset": 10**6}]},
        "prior": {"n3d_checkpoint": str(n3d)}, "model": model, "loss": {"w_id": 0.0},
        "train": _train_settings(device, 2, None)})
    task = InpaintTask(cfg, device)
    remover = MaskRemover(task.prior, task.g_ema, True, True)
    session = EditorSession(remover)
    session.open(face["image"], [face["landmarks"]])
    states = [SliderState({"open_mouth": v}) for v in (0.2, 0.9)]
    k = iter(range(10**9))
    total = timed(lambda: session.render(states[next(k) % 2]), device, iters)
    f = session.faces[0]
    coeffs = states[1].apply(f.coeffs, remover.model)
    view = session.render(states[1])

    def encode():
        for arr in (view.input, view.overlay, view.i3d, view.result):
            Image.fromarray(np.ascontiguousarray(arr)).save(io.BytesIO(), "PNG")

    with torch.no_grad():
        i3d = task.prior.render(coeffs)
        i_n = noised(f.image[None].to(device), f.m, torch.Generator().manual_seed(0), remover.inference.noise)
        res = remover.gen(f.m, i3d, i_n)[0].cpu()
        parts = {"render_ms": lambda: task.prior.render(coeffs), "ng_ms": lambda: remover.gen(f.m, i3d, i_n),
                 "paste_ms": lambda: paste_back(session.image, res, f.transform, mask=f.m[0].cpu()),
                 "encode_ms": encode, "ms": lambda: session.render(states[next(k) % 2])}
        one_thread = {name: _thread_ms(fn, iters) for name, fn in parts.items()}
    params = sum(p.numel() for p in task.g_ema.parameters())
    return {"wall_ms": total * 1e3, **one_thread, "ng_params_m": params / 1e6, **model}


def bench_evaluation(device: torch.device, quick: bool, batch: int = 8, n_images: int | None = None,
                     checkpoint: str | Path | None = None, metrics: list[str] | None = None) -> dict:
    """evaluate.py's whole run on synthetic 256 px test faces with random weights everywhere (N_3D, N_G, ArcFace,
    Inception, LPIPS: speed does not depend on them) -> images/s of the per-image loop (masking the test image,
    removal, L1 / PSNR / SSIM / LPIPS / ArcFace / FID features, mask IoU and landmarks), the seconds of the fixed
    part (FID's matrix square roots, the diversity and controllability edits on one batch) and the projected
    minutes of the paper's 1000-image test set. ``checkpoint``: an inpainting export to use instead of a random
    paper-sized one; ``metrics``: evaluate.py's metrics setting (default: all)."""
    import tempfile
    import warnings

    from engine.config import build_dataclass
    from tasks.evaluation import EvalExperiment, Evaluator

    tmp = Path(tempfile.mkdtemp(prefix="bench_eval_"))
    ckpt = checkpoint or _inpaint_task(device, batch).export(tmp / "inpaint.pt")
    n = n_images or (2 if quick else 4) * batch
    cfg = build_dataclass(EvalExperiment, {
        "test": {"image_size": 256, "faces": [{"kind": "synthetic", "num": n, "offset": 10**6}]},
        "checkpoint": str(ckpt), "baselines": [], "extra_images": batch, "batch_size": batch,
        "device": str(device), "fid_cache_dir": str(tmp / "fid"), "grid_images": 0,
        **({"metrics": list(metrics)} if metrics else {})})
    t = time.perf_counter()
    evaluator = Evaluator(cfg, tmp / "eval")
    setup = time.perf_counter() - t
    fixed = [0.0]
    collect = evaluator._collect

    def timed_collect():  # run() ends with the fixed part: time it apart from the per-image loop
        t0 = time.perf_counter()
        out = collect()
        sync(device)
        fixed[0] += time.perf_counter() - t0
        return out

    evaluator._collect = timed_collect
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # FID of a handful of images: singular covariances, expected here
        evaluator.run()
    sync(device)
    loop = time.perf_counter() - t - fixed[0]
    return {"batch": batch, "images": n, "images_per_s": n / loop, "fixed_s": fixed[0], "setup_s": setup,
            "paper_test_set_min": (PAPER_TEST_IMAGES * loop / n + fixed[0]) / 60}


# one detector on a 4000 x 3000 photo, in a fresh process so that its peak memory is its own
_DETECTOR_CHILD = """
import json, resource, sys, time
import cv2
from skimage import data
from data.detectors import get_detector
img = cv2.resize(data.astronaut(), (3000, 3000), interpolation=cv2.INTER_CUBIC)
img = cv2.copyMakeBorder(img, 0, 0, 500, 500, cv2.BORDER_REFLECT101)
det = get_detector(sys.argv[1])
def cpu():
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime
t, c = time.perf_counter(), cpu()
faces = det.detect(img)
dt, dc = time.perf_counter() - t, cpu() - c
print(json.dumps({"seconds": dt, "cpu_seconds": dc, "faces": len(faces), "image": list(img.shape[:2][::-1]),
                  "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}))
"""


def bench_detectors(names=("dlib", "dlib_cnn", "masked")) -> dict:
    """{detector: {seconds, cpu_seconds, faces, image, peak_rss_gib}} on a 4000 x 3000 photo (each in its own
    process; cpu_seconds is what a busy machine does not inflate)."""
    out = {}
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for name in names:
        r = subprocess.run([sys.executable, "-c", _DETECTOR_CHILD, name], cwd=ROOT, env=env, capture_output=True,
                           text=True)
        out[name] = json.loads(r.stdout.strip().splitlines()[-1]) if r.returncode == 0 else \
            {"error": (r.stderr.strip().splitlines() or [f"exit status {r.returncode}"])[-1]}
    return out


def bench_video(quick: bool, checkpoint: str = "runs/inpaint_demo/inpaint.pt", size: int = 256) -> dict:
    """remove_mask.py --video's path (tasks.video over data.video.transcode) on the synthetic talking head at
    ``size`` px with the demo model: frames/s, ms per frame of each stage, resident memory and its slope per frame.
    Quality against the truth (flicker, hole L1) is scripts/measure_video.py's."""
    import tempfile

    from data.synthetic_video import TalkingHead
    from tasks.photo import load_remover, photo_framing
    from tasks.video import VideoOptions
    from tasks.video_eval import rss_slope, run_video, write_masked_video

    n = 24 if quick else 96
    synth = TalkingHead(n_frames=n, size=size)
    remover = load_remover(checkpoint)
    with tempfile.TemporaryDirectory() as tmp:
        src = write_masked_video(synth, Path(tmp) / "in.mp4")
        run = run_video(remover, src, Path(tmp) / "out.mp4", VideoOptions(first_landmarks=synth.frame(0).landmarks),
                        n_frames=n, framing=photo_framing(remover, "meanface"), rss_every=4)
    return {"frames": n, "size": size, "fps": run["fps"], "ms_per_frame": run["split_ms"],
            "rss_mib_end": run["rss"][-1][1], "rss_mib_per_frame": rss_slope(run["rss"])}


def largest_batch(run, start: int = 2 * PAPER_BATCH, limit: int = 1024) -> dict:
    """``run(batch) -> dict`` at the largest of start, 2 start, 4 start, ... (<= ``limit``) that fits in GPU memory.

    The result gets ``oom_at``: the first batch that ran out of memory (None if ``limit`` was reached). Raises the
    out-of-memory error if even ``start`` does not fit.
    """
    best, b = None, start
    while b <= limit:
        try:
            res = run(b)
        except torch.OutOfMemoryError:
            if best is None:
                raise
            best["oom_at"] = b
            return best
        finally:
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        best, b = res, 2 * b
    best["oom_at"] = None
    return best


# ----------------------------------------------------------------------------------------------------------- main
def machine() -> dict:
    info = {"python": platform.python_version(), "torch": torch.__version__, "cpu": platform.processor() or
            platform.machine(), "threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%d")}
    try:
        info["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                        text=True).stdout.strip()
    except OSError:
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info
