"""The timestep viewer's live controls (driven in-process), the interactive study and its thin notebook 00."""

from __future__ import annotations

import functools
import json
import os
import threading
from pathlib import Path

import numpy as np
import pytest

from dvc_checks import assert_plots_readable
from notebook_checks import assert_figures_render
from rifelab.frames.images import to_tensor, to_uint8
from rifelab.interpolate.viewer import TimestepViewer, relative_cost
from rifelab.rife.checkpoints import load_rife

REPO = Path(__file__).resolve().parent.parent
TINY = {"clip": "carphone", "max_frames": 5, "triplet_stride": 1, "triplet": 1, "timestep": 0.25,
        "strip_timesteps": [0.25, 0.75], "bench_clip": "carphone", "bench_frames": 3, "bench_multi": 3,
        "bench_batch_size": 2, "bench_repeats": 1}


@pytest.fixture(scope="module")
def model():
    return load_rife(device="cpu")


@pytest.fixture()
def viewer(model):
    return TimestepViewer.from_clip(model, "carphone", max_frames=5, stride=1)


def _direct(model, a, b, t) -> np.ndarray:
    return to_uint8(model.interpolate(to_tensor(a), to_tensor(b), t))[0]


class Gated:
    """The real model behind a gate: a call waits until the test opens it, so requests can pile up meanwhile."""

    def __init__(self, model):
        self.model, self.device = model, model.device
        self.open = threading.Event()
        self.open.set()
        self.started = threading.Event()
        self.calls: list[tuple[float, float]] = []

    def interpolate(self, a, b, t, scale, ensemble):
        self.calls.append((float(t), float(scale)))
        self.started.set()
        assert self.open.wait(30), "the test never opened the gate"
        return self.model.interpolate(a, b, t, scale, ensemble)


def test_controls_drive_the_viewer_in_process(model, viewer):
    assert [t.name for t in viewer.triplets] == ["frames 0, 1, 2", "frames 2, 3, 4"]
    box = viewer.widgets(triplet=0, timestep=0.5, scale=1.0, background=False)
    c = viewer.controls
    assert box.children and viewer.rendered == [(0, 0.5, 1.0)] and c["image"].value[:4] == b"\x89PNG"
    assert c["status"].value.startswith("t = 0.50") and "scale 1" in c["status"].value
    calls = viewer.model_calls
    c["timestep"].value = 0.25  # what moving the slider does
    assert viewer.last.timestep == 0.25 and viewer.model_calls == calls + 1
    t0 = viewer.triplets[0]
    np.testing.assert_array_equal(viewer.last.frame, _direct(model, t0.frame0, t0.frame2, 0.25))
    c["triplet"].value = 1
    assert (viewer.last.triplet, viewer.last.timestep, viewer.last.scale) == (1, 0.25, 1.0)
    c["timestep"].value = 0.5  # triplet 1 at 0.5: a new view
    c["triplet"].value = 0  # triplet 0 at 0.5: the first view again
    assert viewer.last.cached and "cached" in c["status"].value  # back to a view already made: no model call
    assert viewer.model_calls == calls + 3
    with pytest.raises(ValueError, match="timestep must lie in"):
        viewer.update(0, 1.5, 1.0)


def test_stale_requests_are_dropped_and_the_status_says_computing(model):
    gated = Gated(model)
    viewer = TimestepViewer.from_clip(gated, "carphone", max_frames=5, stride=1)
    viewer.widgets(triplet=0, timestep=0.5, background=True)
    assert viewer.wait(60) and viewer.rendered == [(0, 0.5, 1.0)]
    c = viewer.controls
    gated.open.clear()
    gated.started.clear()
    c["timestep"].value = 0.25  # the worker starts this one and blocks in the model
    assert gated.started.wait(30)
    assert c["status"].value.startswith("⏳ computing t = 0.25")  # shown at once, before the frame exists
    c["timestep"].value = 0.4  # overtaken before it starts: never computed
    c["timestep"].value = 0.75  # the latest value
    assert "computing t = 0.75" in c["status"].value
    gated.open.set()
    assert viewer.wait(60)
    assert [t for t, _ in gated.calls] == [0.5, 0.25, 0.75]
    assert viewer.rendered == [(0, 0.5, 1.0), (0, 0.75, 1.0)]  # 0.25 was computed but not drawn
    assert viewer.dropped == 1 and viewer.last.timestep == 0.75
    assert c["status"].value.startswith("t = 0.75")


def test_scale_4_on_cpu_warns_of_its_cost_before_running(model, viewer):
    viewer.widgets(triplet=0, timestep=0.5, scale=1.0, background=False)
    c = viewer.controls
    calls = viewer.model_calls
    c["scale"].value = 4.0
    assert viewer.model_calls == calls and viewer.rendered[-1] == (0, 0.5, 1.0)  # nothing ran, old view stays
    assert "scale 4 on a CPU" in c["status"].value and "16x the work" in c["status"].value
    assert "s per frame" in c["status"].value and c["confirm"].layout.display is None  # the button shows
    est = viewer.estimate_seconds(4.0)
    assert est == pytest.approx(viewer._seconds[1.0] * relative_cost(4.0))
    c["confirm"].click()
    assert viewer.model_calls == calls + 1 and viewer.rendered[-1] == (0, 0.5, 4.0)
    assert c["confirm"].layout.display == "none"
    c["timestep"].value = 0.25  # once confirmed, scale 4 runs without asking again
    assert viewer.rendered[-1] == (0, 0.25, 4.0)
    assert relative_cost(1.0) == 1.0 and relative_cost(4.0) == pytest.approx(16.0)


def test_interactive_study_writes_results_and_generated_sentences(tmp_path):
    from rifelab.studies import interactive

    res = interactive.run("cpu", TINY, tmp_path)
    assert res.folder == tmp_path / "cpu" / "interactive" / res.env["device_key"]
    for name in ("metrics.json", "view.png", "timestep_strip.png", "middle_frame_quality.csv",
                 "pipeline_benchmark.csv", "pipeline_benchmark.md", "pipeline_benchmark.png"):
        assert (res.folder / name).exists(), name
    m = json.loads((res.folder / "metrics.json").read_text())
    assert m["view"]["triplet"] == 1 and m["view"]["timestep"] == 0.25 and m["params"]["clip"] == "carphone"
    mf = m["middle_frame"]
    assert 20 < mf["RIFE t=0.5"]["psnr_db"] < 60 and mf["RIFE t=0.5"]["psnr_db"] > mf["repeat I0"]["psnr_db"]
    bench = res.tables["pipeline_benchmark"]
    assert list(bench["mode"]) == ["model only", "pipeline (threads)", "pipeline (serial)"]
    assert (bench["output_frames"] == 5).all()
    headline = json.loads((tmp_path / "cpu" / "metrics" / "interactive.json").read_text())
    assert_plots_readable("interactive", tmp_path / "cpu")
    assert set(headline) == {"rife_psnr_db", "average_psnr_db", "pipeline_output_fps", "pipeline_model_share",
                             "noisy", "environment"}
    assert len(set(bench["worker"])) == 3 and os.getpid() not in set(bench["worker"])  # one process per mode
    assert headline["noisy"] == bool(bench["noisy"].any()) == m["timing"]["noisy"]
    assert any(line.startswith("**noisy timing**") for line in res.summary) == headline["noisy"]
    text = res.summary_markdown()
    assert f"{mf['RIFE t=0.5']['psnr_db']:.2f} dB" in text  # the sentence is made from the number
    assert f"**{m['pipeline']['pipeline (threads)']['model_share']:.0%}**" in text
    assert res.show_widgets is False and "Live controls are off" in interactive.controls(res).data

    live = interactive.run("cpu", {**TINY, "show_widgets": True, "scale": 4.0, "strip_timesteps": [0.5],
                                   "bench_frames": 2}, tmp_path)
    box = interactive.controls(live)
    assert box.children and live.viewer.controls["scale"].value == 4.0
    assert any("scale 4 on a CPU" in line for line in live.summary)  # the headless run says what it cost


def test_a_pipeline_timed_faster_than_its_model_is_re_measured_then_flagged_noisy(tmp_path, monkeypatch):
    from rifelab.interpolate import bench as B
    from rifelab.measure.worker import Slowed
    from rifelab.studies import interactive

    # the model-only mode slowed on purpose (4x its own time): the pipelines that contain it time faster than it
    slowed = functools.partial(B.benchmark_pipeline, wrap=lambda m, w: Slowed(w, factor=4.0) if m == "model only" else w)
    monkeypatch.setattr(interactive, "benchmark_pipeline", slowed)
    quiet = {"max_spread": 100.0, "max_other_cpu": None, "max_steal": None, "attempts": 2}
    res = interactive.run("cpu", {**TINY, "bench_frames": 2, "noise": quiet, "strip_timesteps": [0.5]}, tmp_path)
    bench = res.tables["pipeline_benchmark"]
    assert bench["noisy"].all() and res.headline["noisy"] is True and res.metrics["timing"]["attempts"] == 2
    assert any("faster than the model it contains" in p for p in res.metrics["timing"]["failed_checks"])
    assert res.summary[0].startswith("**noisy timing**") and any(l.startswith("(noisy) `rifelab interpolate`")
                                                                for l in res.summary)
    assert json.loads((tmp_path / "cpu" / "metrics" / "interactive.json").read_text())["noisy"] is True


def test_bad_interactive_params_are_refused_before_anything_runs(tmp_path):
    from rifelab.studies import interactive
    from rifelab.studies.base import ParamError

    with pytest.raises(ParamError, match="'timestep'.*<= 1"):
        interactive.run("cpu", {"timestep": 1.5}, tmp_path)
    with pytest.raises(ParamError, match=r"did you mean 'strip_timesteps'"):
        interactive.run("cpu", {"strip_timestep": [0.5]}, tmp_path)
    with pytest.raises(ValueError, match="gives 2 triplets"):
        interactive.run("cpu", {**TINY, "triplet": 5}, tmp_path)
    assert not (tmp_path / "cpu" / "interactive").exists() or not any((tmp_path / "cpu" / "interactive").iterdir())


@pytest.mark.notebook
def test_notebook_00_runs_headless(tmp_path):
    from rifelab.cli import main

    out = tmp_path / "00.ipynb"
    sets = [f"--set={k}={json.dumps(v)}" for k, v in TINY.items()]
    assert main(["notebook", "notebooks/00_interactive.ipynb", "-o", str(out), "--results-root", str(tmp_path / "r"),
                 *sets]) == 0
    text = out.read_text()
    assert "Live controls are off" in text and "dB** PSNR" in text  # headless: no widgets, generated sentences
    assert assert_figures_render(out) == 3  # view, strip, benchmark: images, not "<Figure size ...>"
    assert (tmp_path / "r" / "cpu" / "metrics" / "interactive.json").exists()


def test_a_cached_value_swaps_the_image_without_drawing_and_a_computing_one_is_marked_stale(model, viewer, monkeypatch):
    viewer.widgets(triplet=0, timestep=0.5, scale=1.0, background=False)
    c = viewer.controls
    first = c["image"].value
    assert c["timestep"].layout.width == "600px" and c["confirm"].layout.width == "auto"  # 24 px per step of 0.05
    borders = []
    monkeypatch.setattr(viewer, "update", lambda *a, _u=viewer.update: (borders.append(c["image"].layout.border),
                                                                        _u(*a))[1])
    c["timestep"].value = 0.25  # a new value: the old view is marked stale while it computes
    assert "dashed" in borders[-1] and "transparent" in c["image"].layout.border
    drawn = []
    monkeypatch.setattr(viewer, "figure", lambda *a, **k: drawn.append(a) or pytest.fail("figure rebuilt"))
    c["timestep"].value = 0.5  # cached: the stored PNG comes back, no figure is built
    assert c["image"].value == first and not drawn and viewer.rendered[-1] == (0, 0.5, 1.0)
