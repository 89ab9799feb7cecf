"""The web editor in a real browser: app.py on 127.0.0.1, driven by headless Chromium (Debian's package) through
Playwright's Python API. With CI=true a missing browser fails the test; elsewhere it skips with how to install it."""

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers import free_port

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
# the flags that work on a closed network: no background calls, no GPU, no sandbox (root in CI)
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
INSTALL = "apt-get install -y chromium && pip install -r requirements.txt (playwright)"


def _browser_or_skip():
    missing = None
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing = "the playwright package"
    if missing is None and not (Path(CHROMIUM).is_file() or shutil.which(CHROMIUM)):
        missing = f"Chromium at {CHROMIUM}"
    if missing:
        message = f"browser test needs {missing}: {INSTALL}"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="module")
def app_url(inpaint_export, tmp_path_factory):
    _browser_or_skip()
    port = free_port()
    log = tmp_path_factory.mktemp("app") / "app.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--checkpoint", str(inpaint_export),
                                 "--port", str(port), "--gallery", "2"], cwd=ROOT, env=env, stdout=out,
                                stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.time() + 180
        while True:
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                pytest.fail(f"app.py did not start: {log.read_text()[-2000:]}")
            time.sleep(1)
        yield url
    finally:
        proc.terminate()
        proc.wait(30)


def test_editor_in_a_browser(app_url, inpaint_export, tmp_path):
    """Upload a masked face with its 5 points, move a slider, download the new result: only the pasted region
    differs from the photo, and it differs from the first result. Saves a screenshot under tmp_path. A text file
    uploaded next gets a one-line message in the page; two keyframes animate into a GIF; the gallery opens a face;
    a second browser session sees no photo."""
    from playwright.sync_api import expect, sync_playwright

    from data.align import five_points
    from data.io import read_image, write_image
    from tasks.editor import EditorSession, SliderState, gallery_faces
    from tasks.removal import MaskRemover

    face = gallery_faces(1, size=96, offset=3_000_100)[0]
    canvas = torch.full((3, 160, 224), 0.35)  # the face in a larger photo: most of it must stay as it is
    canvas[:, 40:136, 70:166] = face["image"]
    photo_path = tmp_path / "masked_face.png"
    write_image(photo_path, canvas)
    photo = read_image(photo_path)
    points = five_points(face["landmarks"]) + np.array([70, 40], np.float32)
    # the region the page may change, from the same code without the browser
    session = EditorSession(MaskRemover.from_checkpoints(inpaint_export))
    session.open(photo, [points])
    region = torch.from_numpy(session.render(SliderState()).region)

    outside_hosts = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1100}, accept_downloads=True)
        page.on("request", lambda r: outside_hosts.append(r.url) if not r.url.startswith(
            (app_url, "data:", "blob:")) else None)
        page.goto(app_url)
        page.locator("#points textarea").fill(" ".join(f"{x:.2f} {y:.2f}" for x, y in points))
        page.locator("#upload input[type=file]").set_input_files(str(photo_path))
        links = page.locator("#result-file a[download], #result-file a[href*='result_']")
        expect(page.locator("#status")).to_contain_text("rendered in", timeout=120_000)
        expect(links.first).to_have_attribute("href", __import__("re").compile(r"result_\d+\.png"), timeout=60_000)
        first_href = links.first.get_attribute("href")

        def download(name: str) -> torch.Tensor:
            with page.expect_download(timeout=60_000) as info:
                links.first.click()
            info.value.save_as(tmp_path / name)
            return read_image(tmp_path / name)

        first = download("first.png")
        box = page.locator("#slider-open_mouth input[type=range]").bounding_box()
        page.mouse.click(box["x"] + 0.95 * box["width"], box["y"] + box["height"] / 2)  # open the mouth
        expect(links.first).not_to_have_attribute("href", first_href, timeout=120_000)
        expect(page.locator("#status")).to_contain_text("rendered in")
        moved = download("moved.png")
        page.locator("#add-key").click()  # keyframes: the open mouth, then closed again -> a 4-frame clip
        page.mouse.click(box["x"] + 0.25 * box["width"], box["y"] + box["height"] / 2)
        expect(links.first).not_to_have_attribute("href", links.first.get_attribute("href"), timeout=120_000)
        page.locator("#add-key").click()
        page.locator("#frames input[type=number]").fill("4")
        page.locator("#frames input[type=number]").press("Enter")
        page.locator("#animate").click()
        expect(page.locator("#anim-files")).to_contain_text(".gif", timeout=120_000)
        clip = [a.get_attribute("href") for a in page.locator("#anim-files a").all()]
        gif = page.request.get(next(h for h in clip if h and h.endswith(".gif")))
        (tmp_path / "clip.gif").write_bytes(gif.body())
        page.screenshot(path=str(tmp_path / "editor.png"), full_page=True)
        bad = tmp_path / "notes.txt"
        bad.write_text("not a photo")
        page.locator("#upload button[aria-label*='Clear'], #upload button[aria-label*='clear']").first.click()
        page.locator("#upload input[type=file]").set_input_files(str(bad))
        expect(page.locator("#status")).to_contain_text("notes.txt: not an image", timeout=60_000)
        assert "Traceback" not in page.content()
        page.locator("#gallery img").first.click()  # a held-out synthetic face from the gallery
        expect(page.locator("#status")).to_contain_text("held-out face 1", timeout=120_000)
        other = browser.new_context().new_page()  # another user: sees no one else's photo
        other.goto(app_url)
        other.wait_for_selector("#gallery")
        assert other.locator("#view-result img").count() == 0 and other.locator("#view-input img").count() == 0
        browser.close()

    assert first.shape == moved.shape == photo.shape
    outside = ~region
    assert torch.equal(moved[:, outside], photo[:, outside]) and torch.equal(first[:, outside], photo[:, outside])
    changed = (moved - first).abs().amax(0) > 1.5 / 255
    assert changed.any() and not changed[outside].any()
    assert region.float().mean() < 0.5
    assert (tmp_path / "editor.png").stat().st_size > 10_000
    from data.video import read_frames

    frames = [f.image for f in read_frames(tmp_path / "clip.gif")]
    assert len(frames) == 4 and frames[0].shape == (*photo.shape[1:], 3)
    assert outside_hosts == []  # nothing fetched from outside the app (offline)
    print(f"screenshot: {tmp_path / 'editor.png'}; {int(changed.sum())} pixels changed inside "
          f"{int(region.sum())} of the region ({np.prod(region.shape)} in the photo)")


def test_editor_takes_masks_off_a_video_in_a_browser(app_url, talking_clip, tmp_path):
    """Upload a short masked video with its first frame's 5 points, run it: the page reports one face track and
    offers an MP4 with every frame, changed where the mask was; a text file uploaded as a video is one line."""
    from playwright.sync_api import expect, sync_playwright

    from data.align import five_points
    from data.video import read_frames

    synth, src, lm = talking_clip
    points = five_points(np.loadtxt(lm))
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1400})
        page.goto(app_url)
        page.locator("#points textarea").fill(" ".join(f"{x:.2f} {y:.2f}" for x, y in points))
        page.locator("#video-upload input[type=file]").set_input_files(str(src))
        page.locator("#video-run").click()
        expect(page.locator("#video-status")).to_contain_text("1 face track(s)", timeout=180_000)
        link = page.locator("#video-file a").first
        expect(link).to_have_attribute("href", __import__("re").compile(r"video_\d+\.mp4"), timeout=60_000)
        (tmp_path / "out.mp4").write_bytes(page.request.get(link.get_attribute("href")).body())
        bad = tmp_path / "notes.mp4"
        bad.write_text("not a video")
        clear = "#video-upload button[aria-label*='Clear'], #video-upload button[aria-label*='clear']"
        page.locator(clear).first.click()
        page.locator("#video-upload input[type=file]").set_input_files(str(bad))
        page.locator("#video-run").click()
        expect(page.locator("#video-status")).to_contain_text("notes.mp4: not a readable video", timeout=60_000)
        assert "Traceback" not in page.content()
        browser.close()
    outs = [f.image.astype(int) for f in read_frames(tmp_path / "out.mp4")]
    ins = [f.image.astype(int) for f in read_frames(src)]
    assert len(outs) == len(ins) == len(synth)
    assert all((np.abs(o - i).max(-1) > 40).any() for o, i in zip(outs, ins))
