"""Shared fixtures."""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts its OpenMP threads (see Makefile)

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from tests.helpers import tiny_data, tiny_train  # noqa: E402

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def n3d_export(tmp_path_factory):
    """An (untrained) N_3D inference export at 32 px, for tasks that need a prior."""
    from engine.config import build_dataclass
    from tasks.recon3d import Recon3DExperiment, Recon3DTask

    cfg = build_dataclass(Recon3DExperiment, {"data": tiny_data(), "model": {"backbone": "resnet18"},
                                              "loss": {"w_id": 0.0}, "train": tiny_train()})
    torch.manual_seed(0)  # the same weights whichever test builds it first
    task = Recon3DTask(cfg, torch.device("cpu"))
    return task.export(tmp_path_factory.mktemp("n3d") / "n3d.pt")


@pytest.fixture(scope="session")
def inpaint_export(n3d_export, tmp_path_factory):
    """An (untrained) tiny N_G export on top of `n3d_export`."""
    from engine.config import build_dataclass
    from tasks.inpaint import InpaintExperiment, InpaintTask

    cfg = build_dataclass(InpaintExperiment, {
        "data": tiny_data(), "prior": {"n3d_checkpoint": str(n3d_export)},
        "model": {"base_channels": 8, "n_res": 2, "d_base_channels": 8, "d_max_channels": 32},
        "loss": {"w_id": 0.0}, "train": tiny_train()})
    torch.manual_seed(0)
    return InpaintTask(cfg, torch.device("cpu")).export(tmp_path_factory.mktemp("inp") / "inpaint.pt")


@pytest.fixture
def lower_face_m(monkeypatch):
    """N_3D's occlusion map replaced by a lower-face ellipse (what a trained N_3D predicts for a mask; the tests'
    untrained N_3D marks the whole crop)."""
    from tasks.prior import PriorModule

    analyze = PriorModule.coefficients_and_mask

    def fixed(self, masked):
        coeffs, m = analyze(self, masked)
        s = m.shape[-1]
        yy, xx = torch.meshgrid(torch.arange(s), torch.arange(s), indexing="ij")
        ell = ((xx - s * 0.5) / (s * 0.28)) ** 2 + ((yy - s * 0.7) / (s * 0.22)) ** 2 <= 1
        return coeffs, ell.to(m).expand_as(m).contiguous()

    monkeypatch.setattr(PriorModule, "coefficients_and_mask", fixed)


@pytest.fixture(scope="session")
def talking_clip(tmp_path_factory):
    """A 12-frame 96 px talking head with its mask, as H.264, and its first frame's landmarks as a file."""
    from data.synthetic_video import TalkingHead
    from tasks.video_eval import write_masked_video

    d = tmp_path_factory.mktemp("clip")
    synth = TalkingHead(n_frames=12, size=96)
    src = write_masked_video(synth, d / "in.mp4")
    np.savetxt(d / "lm.txt", synth.frame(0).landmarks)
    return synth, src, d / "lm.txt"
