"""The web editor: take a face mask off a photo and play with the face behind it (Gradio, in the browser).

    python app.py [--checkpoint runs/inpaint_demo/inpaint.pt | --release-n3d 3D_it_500000.pkl
                   --release-gen inpaint_it_200000.pkl] [--host 127.0.0.1] [--port 7860]

Upload a photo or pick a held-out synthetic test face; move the sliders (expressions, head towards frontal,
lighting, noise seed); add slider states as keyframes and animate them into an MP4 and a GIF. The page is served on
127.0.0.1 only unless --host says otherwise, and never through a public share link unless --share is given. The
logic lives in tasks/editor.py (testable without a browser); this file is the page. docs/editor.md has the details.
"""

import argparse
import atexit
import functools
import os
import shutil
import sys
import tempfile
import traceback
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home (this runs offline)
os.environ.setdefault("HF_HUB_OFFLINE", "1")

SYNTHETIC_NOTE = (
    "**This model was trained on synthetic faces only** (the demo's embedded morphable model): on a real photo its "
    "result means nothing. Real photos need real weights: a model trained with `configs/3d/paper.yaml` and "
    "`configs/inpaint/paper.yaml` (`python app.py --checkpoint runs/inpaint_paper/inpaint.pt`), or the authors' "
    "release (`python app.py --release-n3d 3D_it_500000.pkl --release-gen inpaint_it_200000.pkl`).")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default="runs/inpaint_demo/inpaint.pt", help="RUN/inpaint.pt of train_inpaint.py")
    p.add_argument("--n3d-checkpoint", default=None, help="N_3D export (default: the one the generator recorded)")
    p.add_argument("--release-n3d", default=None, help="the authors' 3D_it_500000.pkl (with --release-gen)")
    p.add_argument("--release-gen", default=None, help="the authors' inpaint_it_200000.pkl (with --release-n3d)")
    p.add_argument("--release-config", default=None, help="release preset YAML (default: built-in)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a release-preset value (repeatable)")
    p.add_argument("--lm3d", default=None, help="BFM/similarity_Lm3D_all.mat for --align deng / release")
    p.add_argument("--align", choices=["ffhq", "meanface", "deng", "release"], default=None,
                   help="crop framing (default: the model's own; meanface for models trained on synthetic faces)")
    p.add_argument("--detector", default="masked", help="face detector for uploads (scripts/remove_mask.py's)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--share", action="store_true", help="also open a public Gradio share link (off by default)")
    p.add_argument("--gallery", type=int, default=6, help="number of held-out synthetic test faces offered")
    p.add_argument("--video-frames", type=int, default=300,
                   help="an uploaded video is processed up to this many frames (default 300: 10 s at 30 frames/s)")
    return p.parse_args(argv)


def build_app(remover, args, temp_root: Path):
    """The Gradio page over tasks.editor for a loaded MaskRemover."""
    import cv2
    import gradio as gr
    import numpy as np

    from data.io import write_image
    from data.upload import UploadError, read_upload
    from data.video import VideoError, write_video
    from tasks.editor import EditorSession, SliderState, expression_sliders, gallery_faces, parse_points
    from tasks.photo import to_uint8

    specs = expression_sliders(remover.model)
    gallery = gallery_faces(args.gallery) if args.gallery > 0 else []
    synthetic = bool(getattr(remover.model, "expression_names", None))

    class User:
        """One browser session's photo, keyframes and files (gr.State: never shared between sessions)."""

        def __init__(self):
            self.editor = EditorSession(remover, align=args.align, detector=args.detector)
            self.keyframes: list[SliderState] = []
            self.dir = Path(tempfile.mkdtemp(prefix="session_", dir=temp_root))
            self.count = 0

        def path(self, stem: str, suffix: str) -> Path:
            self.count += 1
            return self.dir / f"{stem}_{self.count:04d}{suffix}"

    def forget(user):
        if isinstance(user, User):
            shutil.rmtree(user.dir, ignore_errors=True)

    def state_of(values) -> SliderState:
        k = len(specs)
        exp = {s.key: float(v) for s, v in zip(specs, values[:k])}
        yaw, pitch, bright, lx, ly = (float(v) for v in values[k:k + 5])
        return SliderState(exp, yaw, pitch, bright, lx, ly)

    blank = (None, None, None, None, None)

    def guarded(fn):
        """An unexpected error becomes one line in the page (the traceback goes to the server's log only)."""
        @functools.wraps(fn)
        def run(*a, **k):
            try:
                return fn(*a, **k)
            except gr.Error:
                raise
            except Exception as e:
                traceback.print_exc()
                why = str(e).splitlines()[0] if str(e) else type(e).__name__
                raise gr.Error(f"something went wrong: {why} (details in the server's log)") from None
        return run

    def show(user: User, values, seed, messages=()) -> tuple:
        """(state, status, input, overlay, I_3D, result, result file) for the current sliders."""
        try:
            view = user.editor.render(state_of(values), int(seed))
        except ValueError as e:
            return (user, f"⚠️ {e}", *blank)
        result = user.path("result", ".png")
        write_image(result, view.result)
        status = [*messages, f"rendered in {view.seconds * 1000:.0f} ms (I_3D + N_G + paste-back; N_3D ran once "
                             "for this photo)"]
        i3d = cv2.resize(view.i3d, (256, 256), interpolation=cv2.INTER_NEAREST)  # the model's crop, enlarged
        return (user, "\n\n".join(status), view.input, view.overlay, i3d, view.result, str(result))

    def open_photo(user, image, landmarks, values, seed, notes=()):
        user = user if isinstance(user, User) else User()
        try:
            msgs = user.editor.open(image, landmarks)
        except ValueError as e:
            return (user, f"⚠️ {e}", *blank, gr.update(choices=[], value=None))
        out = show(user, values, seed, [*notes, *msgs])
        choices = [f"face {i + 1}" for i in range(len(user.editor.faces))]
        return (*out, gr.update(choices=choices, value=choices[0]))

    @guarded
    def on_upload(user, file, points, seed, *values):
        if file is None:
            return (user, "", *blank, gr.update())
        try:
            image, notes = read_upload(file)
            landmarks = [parse_points(points)] if points and points.strip() else None
        except (UploadError, ValueError) as e:
            return (user, f"⚠️ {e}", *blank, gr.update(choices=[], value=None))
        return open_photo(user, image, landmarks, values, seed, notes)

    @guarded
    def on_gallery(evt: gr.SelectData, user, seed, *values):
        face = gallery[evt.index]
        return open_photo(user, face["image"], [face["landmarks"]], values, seed, [f"{face['name']} (landmarks known)"])

    @guarded
    def on_points(user, points, seed, *values):
        if not isinstance(user, User) or user.editor.image is None:
            return (user, "⚠️ open a photo first", *blank, gr.update())
        try:
            lm = parse_points(points)
        except ValueError as e:
            return (user, f"⚠️ {e}", *blank, gr.update())
        return open_photo(user, user.editor.image, [lm], values, seed, ["aligned from the given points"])

    @guarded
    def on_face(user, choice, seed, *values):
        if not isinstance(user, User) or not choice:
            return (user, "", *blank)
        try:
            user.editor.choose(int(str(choice).split()[-1]) - 1)
        except ValueError as e:
            return (user, f"⚠️ {e}", *blank)
        return show(user, values, seed)

    @guarded
    def on_change(user, seed, *values):
        if not isinstance(user, User):
            return (user, "open a photo first (upload one or pick a face from the gallery)", *blank)
        return show(user, values, seed)

    @guarded
    def on_variation(user, *values):
        seed = int(np.random.default_rng().integers(0, 2**31 - 1))
        return (seed, *on_change(user, seed, *values))

    defaults = [0.0] * (len(specs) + 5)

    @guarded
    def on_reset(user):
        return (*defaults, 0, *on_change(user, 0, *defaults))

    @guarded
    def on_add_key(user, *values):
        if not isinstance(user, User):
            return user, "open a photo first"
        user.keyframes.append(state_of(values))
        return user, f"{len(user.keyframes)} keyframe(s); animate needs 2 or more"

    @guarded
    def on_clear_keys(user):
        if isinstance(user, User):
            user.keyframes = []
        return user, "0 keyframes"

    @guarded
    def on_animate(user, frames, fps, seed):
        if not isinstance(user, User) or user.editor.image is None:
            return user, "⚠️ open a photo first", None, None, None
        if len(user.keyframes) < 2:
            return user, "⚠️ add two or more keyframes (set the sliders, then 'add keyframe')", None, None, None
        clip = user.editor.animate(user.keyframes, int(frames), int(seed))
        mp4, gif = user.path("animation", ".mp4"), user.path("animation", ".gif")
        write_video(clip, mp4, fps=float(fps))
        write_video(clip, gif, fps=float(fps))
        return (user, f"{int(frames)} frames through {len(user.keyframes)} keyframes, same noise in every frame",
                str(mp4), str(gif), [str(mp4), str(gif)])

    @guarded
    def on_video(user, file, animate, points, seed, *values):
        user = user if isinstance(user, User) else User()
        if file is None:
            return user, "⚠️ upload a video first", None, None
        keys = list(user.keyframes) if animate else [state_of(values)] * 2
        if animate and len(keys) < 2:
            return user, "⚠️ add two or more keyframes to animate over the video", None, None
        try:
            lm = parse_points(points) if points and points.strip() else None
            out = user.path("video", ".mp4")
            about, run = user.editor.video(file, out, keys, int(seed), lm, max_frames=args.video_frames)
        except (ValueError, VideoError, FileNotFoundError) as e:
            return user, f"⚠️ {Path(str(file)).name}: {e.args[0] if e.args else e}", None, None
        cut = run.report.frames < run.report.expected and not run.report.stopped
        lines = [about.replace(str(file), Path(str(file)).name), *run.warnings, *run.notes]
        if cut:
            lines.append(f"the first {run.report.frames} frames only (this editor's limit: --video-frames)")
        return user, "\n\n".join(lines).replace(str(out), out.name), str(out), str(out)

    with gr.Blocks(title="Face mask removal editor", analytics_enabled=False, delete_cache=(600, 3600)) as demo:
        user = gr.State(None, delete_callback=forget)
        gr.Markdown("# Face mask removal editor\nUpload a masked face or pick a held-out synthetic test face, then "
                    "move the sliders: N_3D reads the face once; each change re-renders the 3D prior and reruns N_G.")
        if synthetic:
            gr.Markdown(SYNTHETIC_NOTE, elem_id="synthetic-note")
        with gr.Row():
            with gr.Column(scale=1):
                upload = gr.File(label="Upload a photo (JPEG, PNG, ...; up to 25 MB, 8000 px a side)",
                                 type="filepath", elem_id="upload")
                pick = gr.Gallery([(to_uint8(g["image"]), g["name"]) for g in gallery],
                                  label="or pick a held-out synthetic test face", columns=6, height=120,
                                  allow_preview=False, elem_id="gallery")
                points = gr.Textbox(label="5 points instead of the detector (x y: left eye, right eye, nose tip, "
                                          "left and right mouth corner)", lines=1, elem_id="points")
                use_points = gr.Button("use these points", size="sm")
                face = gr.Dropdown([], label="face", elem_id="face")
            with gr.Column(scale=2):
                status = gr.Markdown("", elem_id="status")
                with gr.Row():
                    view_in = gr.Image(label="input", format="png", interactive=False, height=260, elem_id="view-input")
                    view_m = gr.Image(label="occlusion map (N_3D)", format="png", interactive=False, height=260)
                    view_3d = gr.Image(label="I_3D (rendered prior)", format="png", interactive=False, height=260)
                    view_out = gr.Image(label="result", format="png", interactive=False, height=260,
                                        elem_id="view-result")
                result_file = gr.File(label="download the result (PNG)", elem_id="result-file")
        with gr.Row():
            with gr.Column():
                gr.Markdown("### Expression" + ("" if synthetic else " (first BFM components, in std)"))
                exp_sliders = [gr.Slider(s.minimum, s.maximum, 0.0, step=0.05, label=s.label,
                                         elem_id=f"slider-{s.key.replace('[', '-').replace(']', '')}") for s in specs]
            with gr.Column():
                gr.Markdown("### Head and light")
                yaw = gr.Slider(0, 1, 0, step=0.05, label="yaw towards frontal", elem_id="slider-yaw")
                pitch = gr.Slider(0, 1, 0, step=0.05, label="pitch towards frontal", elem_id="slider-pitch")
                bright = gr.Slider(-1.5, 1.5, 0, step=0.05, label="brightness", elem_id="slider-brightness")
                light_x = gr.Slider(-1, 1, 0, step=0.05, label="light left / right", elem_id="slider-light-x")
                light_y = gr.Slider(-1, 1, 0, step=0.05, label="light below / above", elem_id="slider-light-y")
                with gr.Row():
                    seed = gr.Number(0, label="noise seed", precision=0, elem_id="seed")
                    variation = gr.Button("new variation")
                    reset = gr.Button("reset")
            with gr.Column():
                gr.Markdown("### Animate\nSet the sliders, add a keyframe; repeat; then animate (eased, same noise).")
                with gr.Row():
                    add_key = gr.Button("add keyframe", elem_id="add-key")
                    clear_keys = gr.Button("clear keyframes")
                keys_info = gr.Markdown("0 keyframes")
                frames = gr.Slider(2, 96, 24, step=1, label="frames", elem_id="frames")
                fps = gr.Slider(1, 30, 12, step=1, label="frames per second")
                run_anim = gr.Button("animate", variant="primary", elem_id="animate")
                anim_video = gr.Video(label="animation (MP4)", interactive=False, height=260)
                anim_gif = gr.Image(label="animation (GIF)", format="gif", interactive=False)
                anim_files = gr.File(label="download MP4 and GIF", file_count="multiple", elem_id="anim-files")

        with gr.Row():
            with gr.Column():
                gr.Markdown("### Video\nThe sliders' state (or the keyframes, eased over each face's track) on every "
                            "face of a video; the 5 points above, if given, are the first frame's face. Sound kept.")
                video_in = gr.File(label=f"Upload a video (MP4, MOV, MKV, ...; up to 25 MB; the first "
                                         f"{args.video_frames} frames)", type="filepath", elem_id="video-upload")
                video_animate = gr.Checkbox(False, label="animate the keyframes over each face track",
                                            elem_id="video-animate")
                run_video = gr.Button("take the masks off the video", variant="primary", elem_id="video-run")
            with gr.Column(scale=2):
                video_status = gr.Markdown("", elem_id="video-status")
                video_out = gr.Video(label="result (MP4)", interactive=False, height=300)
                video_file = gr.File(label="download the video", elem_id="video-file")

        sliders = [*exp_sliders, yaw, pitch, bright, light_x, light_y]
        views = [user, status, view_in, view_m, view_3d, view_out, result_file]
        upload.upload(on_upload, [user, upload, points, seed, *sliders], [*views, face])
        pick.select(on_gallery, [user, seed, *sliders], [*views, face])
        use_points.click(on_points, [user, points, seed, *sliders], [*views, face])
        face.input(on_face, [user, face, seed, *sliders], views)
        for s in sliders:
            s.release(on_change, [user, seed, *sliders], views, trigger_mode="always_last")
        seed.submit(on_change, [user, seed, *sliders], views)
        variation.click(on_variation, [user, *sliders], [seed, *views])
        reset.click(on_reset, [user], [*sliders, seed, *views])
        add_key.click(on_add_key, [user, *sliders], [user, keys_info])
        clear_keys.click(on_clear_keys, [user], [user, keys_info])
        run_anim.click(on_animate, [user, frames, fps, seed], [user, keys_info, anim_video, anim_gif, anim_files])
        run_video.click(on_video, [user, video_in, video_animate, points, seed, *sliders],
                        [user, video_status, video_out, video_file])
    return demo.queue(default_concurrency_limit=1, max_size=64)  # one render at a time; others wait in line


def main(argv=None) -> int:
    args = parse_args(argv)
    temp_root = Path(tempfile.mkdtemp(prefix="mask_editor_"))
    atexit.register(shutil.rmtree, temp_root, True)
    os.environ["GRADIO_TEMP_DIR"] = str(temp_root / "gradio")  # uploads and outputs: removed at exit
    from engine.config import ConfigError
    from tasks.photo import load_remover

    try:
        remover = load_remover(args.checkpoint, args.n3d_checkpoint, args.device, args.release_n3d,
                               args.release_gen, args.release_config, args.overrides, args.lm3d, args.align)
    except (FileNotFoundError, ValueError, KeyError, ConfigError) as e:
        print(f"error: {e.args[0] if e.args else e}", file=sys.stderr)
        return 2
    demo = build_app(remover, args, temp_root)
    print(f"editor on http://{args.host}:{args.port} (Ctrl-C to stop)", flush=True)
    demo.launch(server_name=args.host, server_port=args.port, share=args.share, max_file_size="25mb",
                ssr_mode=False, show_error=False, quiet=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
