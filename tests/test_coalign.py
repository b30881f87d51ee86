"""Tests of rifelab.coalign (RollingDepth co-alignment), rifelab.synthdepth (synthetic truth) and the coalign study."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from dvc_checks import assert_plots_readable
from notebook_checks import assert_figures_render
from rifelab.depth.coalign import AlignConfig, align, coalign_loss, coalign_loss_dense, identity_alignment, loss_step, merge, prepare
from rifelab.depth.lsq import solve_lsq
from rifelab.depth.metrics import affine_fit, agreement_metrics, depth_metrics
from rifelab.depth.snippets import SnippetSet, effective_dilation, max_dilation, snippet_frames
from rifelab.depth.stopping import LossPlateau, RelativeTolerance, replay_stopping, stopping_rule
from rifelab.studies.base import ParamError
from rifelab.depth.synthetic import (
    load_snippets_npz,
    make_snippets,
    render_room_depth,
    save_snippets_npz,
    synthetic_video,
)

SMALL = dict(frames=24, height=24, width=32, dilations=(1, 3, 7))
CFG = AlignConfig(factor=2)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny tensors: one intra-op thread avoids thread-pool overhead on a busy 2-core machine."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def noisy():
    return synthetic_video(**SMALL, scale_jitter=0.3, shift_jitter=0.2, noise_std=0.02, seed=3)


@pytest.fixture(scope="module")
def clean():
    return synthetic_video(**SMALL, scale_jitter=0.3, shift_jitter=0.2, noise_std=0.0, seed=5)


# ---------------------------------------------------------------- geometry and generator


def test_dilation_cap_and_counts():
    assert max_dilation(100, 3) == 32
    assert effective_dilation(25, 100) == 25
    assert effective_dilation(25, 40) == 12  # int(40/3) - 1
    assert snippet_frames(4, 3, 2).tolist()[1] == [1, 3, 5]


def test_generator_is_consistent_with_truth(clean):
    v = clean
    assert v.depth.shape == (24, 24, 32) and np.isfinite(v.depth).all() and (v.depth > 0).all()
    assert v.snippets.requested == (1, 3, 7) and v.snippets.counts == (22, 18, 10)
    for d, arr, de in zip(v.snippets.requested, v.snippets.arrays, v.snippets.dilations):
        idx = snippet_frames(arr.shape[0], 3, de).numpy()
        pred = v.true_scale[d][:, None, None, None] * v.inverse_depth[idx] + v.true_shift[d][:, None, None, None]
        np.testing.assert_allclose(arr.numpy(), pred, rtol=1e-4, atol=1e-5)
    # the scene moves: consecutive frames differ
    assert np.abs(np.diff(v.depth, axis=0)).mean() > 1e-3


# ---------------------------------------------------------------- loss


def test_scatter_loss_equals_dense_reference(noisy):
    problem = prepare(noisy.snippets, CFG)
    K = problem.num_snippets
    g = torch.Generator().manual_seed(0)
    scale = (1 + 0.3 * torch.randn(K, generator=g)).requires_grad_()
    shift = (0.2 * torch.randn(K, generator=g)).requires_grad_()
    with torch.no_grad():  # push some values below the depth clip to exercise it
        shift[:3] -= 3.0
    v1 = coalign_loss(problem, scale, shift, CFG)
    g1 = torch.autograd.grad(v1, [scale, shift])
    v2 = coalign_loss_dense(problem, scale, shift, CFG)
    g2 = torch.autograd.grad(v2, [scale, shift])
    assert v1.item() == pytest.approx(v2.item(), rel=1e-5)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)


def test_dense_and_scatter_trajectories_match(noisy):
    cfg = AlignConfig(factor=2, iterations=40)
    a = align(noisy.snippets, cfg, loss="vectorised")
    b = align(noisy.snippets, cfg, loss="dense")
    np.testing.assert_allclose(a.loss_history, b.loss_history, rtol=1e-4)
    torch.testing.assert_close(a.scale, b.scale, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(a.shift, b.shift, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------- recovery of the truth


def _affine_consistency(v, result):
    """Spread of the recovered per-snippet maps from inverse depth (s*a, s*(b - offset) + t)."""
    gain, bias = [], []
    for d, (s, t) in zip(v.snippets.requested, result.per_dilation()):
        a, b = v.true_scale[d], v.true_shift[d]
        gain.append(s.double().numpy() * a)
        bias.append(s.double().numpy() * (b - result.offset) + t.double().numpy())
    gain, bias = np.concatenate(gain), np.concatenate(bias)
    return np.ptp(gain) / abs(gain.mean()), np.ptp(bias) / abs(gain.mean())


def test_lsq_recovers_noise_free_truth(clean):
    res = solve_lsq(clean.snippets, CFG)
    gain_spread, bias_spread = _affine_consistency(clean, res)
    assert gain_spread < 1e-4 and bias_spread < 1e-4
    m = depth_metrics(merge(clean.snippets, res), clean.depth)
    assert m["abs_rel"] < 1e-4 and m["delta1"] == 1.0


def test_adam_recovers_noise_free_truth_without_shift_penalty(clean):
    res = align(clean.snippets, AlignConfig(factor=2, lambda_shift=0.0))
    m = depth_metrics(merge(clean.snippets, res), clean.depth)
    naive = depth_metrics(merge(clean.snippets, identity_alignment(clean.snippets)), clean.depth)
    assert m["abs_rel"] < 5e-3 < naive["abs_rel"]
    gain_spread, _ = _affine_consistency(clean, res)
    assert gain_spread < 2e-2


# ---------------------------------------------------------------- stopping rules


def test_plateau_rule_stops_exactly_where_it_says():
    losses = [1.0, 0.5, 0.25] + [0.25 - 1e-5 * k for k in range(1, 40)]
    # deltas: 0.5, 0.25, then 1e-5 from step 4 on; the 5th small delta is at step 3 + 5 = 8
    assert replay_stopping({"rule": "plateau", "tol": 1e-4, "patience": 5}, losses) == 8
    assert replay_stopping(LossPlateau(1e-6, 5), losses) is None
    assert replay_stopping("none", losses) is None
    # a big jump resets the streak
    bumpy = [1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 2.0]
    assert replay_stopping(LossPlateau(1e-3, 3), bumpy) == 7


def test_relative_rule():
    losses = [100.0 * 0.999**k for k in range(50)]  # relative change 1e-3 every step
    assert replay_stopping(RelativeTolerance(2e-3, 4), losses) == 5
    assert replay_stopping(RelativeTolerance(5e-4, 4), losses) is None
    with pytest.raises(ValueError, match="patience"):
        stopping_rule({"rule": "plateau", "tol": 1e-4, "patience": 0})
    with pytest.raises(ValueError, match="unknown stopping rule"):
        stopping_rule({"rule": "sometimes"})


def test_aligner_stops_where_its_rule_says(noisy):
    full = align(noisy.snippets, AlignConfig(factor=2, iterations=600))
    rule = LossPlateau(1e-4, 20)
    expected = replay_stopping(rule, full.loss_history)
    assert expected is not None and expected < 600
    seen = []
    res = align(noisy.snippets, AlignConfig(factor=2, iterations=600), stopping=rule, callback=lambda i, v: seen.append(i))
    assert res.iterations == res.stop_iteration == expected == len(res.loss_history)
    assert seen == list(range(1, expected + 1))
    deltas = np.abs(np.diff(res.loss_history))
    assert (deltas[-20:] < 1e-4).all() and not (deltas[-21] < 1e-4)
    np.testing.assert_allclose(res.loss_history, full.loss_history[:expected], rtol=1e-5)
    # batched checks (as on a GPU): same firing point, up to check_every - 1 extra steps run
    batched = align(noisy.snippets, AlignConfig(factor=2, iterations=600), stopping=rule, check_every=16)
    assert batched.stop_iteration == expected and expected <= batched.iterations < expected + 16


# ---------------------------------------------------------------- bad inputs


def test_mismatched_sizes_are_rejected():
    a = np.zeros((18, 3, 8, 8), np.float32)
    b = np.zeros((14, 3, 8, 6), np.float32)
    with pytest.raises(ValueError, match="mismatched sizes"):
        SnippetSet.from_arrays({1: a, 3: b})
    with pytest.raises(ValueError, match=r"\(S_d, L, H, W\)"):
        SnippetSet.from_arrays({1: np.zeros((18, 8, 8))})


def test_dilation_that_does_not_fit_is_rejected():
    rng = np.random.default_rng(0)
    a = rng.random((18, 3, 8, 8)).astype(np.float32)  # T = 20
    with pytest.raises(ValueError, match="does not fit a video of 20 frames"):
        SnippetSet.from_arrays({1: a, 3: rng.random((10, 3, 8, 8))}, num_frames=20)  # needs 14
    with pytest.raises(ValueError, match="fit no single video length"):
        SnippetSet.from_arrays({1: a, 3: rng.random((17, 3, 8, 8))})
    with pytest.raises(ValueError, match="too short"):
        SnippetSet.from_arrays({1: rng.random((3, 3, 8, 8))})
    # a dilation above the cap is capped, as the reference does
    s = SnippetSet.from_arrays({1: a, 25: rng.random((20 - 2 * 5, 3, 8, 8))})
    assert s.dilations == (1, 5) and s.num_frames == 20


def test_nans_are_rejected():
    a = np.random.default_rng(0).random((18, 3, 8, 8)).astype(np.float32)
    a[4, 1, 2, 2] = np.nan
    with pytest.raises(ValueError, match=r"NaN/inf values in snippets \[4\]"):
        SnippetSet.from_arrays({1: a})


def test_bad_config_and_tiny_frames(noisy):
    with pytest.raises(ValueError, match="lr"):
        AlignConfig(lr=0)
    with pytest.raises(ValueError, match="border"):
        prepare(noisy.snippets, AlignConfig(border=20))
    with pytest.raises(ValueError, match="loss must be"):
        align(noisy.snippets, loss="sparse")


# ---------------------------------------------------------------- npz layout


def test_npz_roundtrip_and_layout(tmp_path, noisy):
    path = save_snippets_npz(tmp_path / "snips.npz", noisy.snippets)
    with np.load(path) as z:
        assert set(z.files) == {"dilation1", "dilation3", "dilation7", "num_frames"}
        assert z["dilation3"].shape == (18, 3, 24, 32)
    back = load_snippets_npz(path)
    assert back.counts == noisy.snippets.counts and back.num_frames == 24
    # without num_frames and with a channel axis (S_d, L, 1, H, W), as a real run may save them
    np.savez(tmp_path / "real.npz", **{f"dilation{d}": a.numpy()[:, :, None] for d, a in noisy.snippets.as_dict().items()})
    real = load_snippets_npz(tmp_path / "real.npz")
    assert real.num_frames == 24 and real.frame_size == (24, 32)
    np.savez(tmp_path / "bad.npz", depth=np.zeros(3))
    with pytest.raises(ValueError, match="no 'dilation"):
        load_snippets_npz(tmp_path / "bad.npz")


# ---------------------------------------------------------------- metrics


def test_metrics_sanity():
    depth = render_room_depth(6, 16, 20)
    inv = 1.0 / depth
    m = depth_metrics(3.0 * inv - 0.5, depth)
    assert m["abs_rel"] < 1e-6 and m["delta1"] == 1.0 and m["temporal_ratio_gt"] == pytest.approx(1.0)
    assert depth_metrics(inv + 0.3 * np.random.default_rng(0).random(inv.shape), depth)["abs_rel"] > 0.01
    a = agreement_metrics(inv, 2 * inv + 1)  # same after min-max normalisation
    assert a["mae"] < 1e-6 and a["p90"] < 1e-6 and a["temporal_ratio"] == pytest.approx(1.0)
    assert affine_fit([0, 1, 2], [1, 3, 5]) == pytest.approx((2.0, 1.0))


def test_make_snippets_validates():
    with pytest.raises(ValueError, match="jitter"):
        make_snippets(np.ones((10, 4, 4)), (1,), scale_jitter=-1)


# ---------------------------------------------------------------- loss step


def test_loss_step_advances_like_align(noisy):
    cfg = AlignConfig(factor=2, iterations=3)
    problem = prepare(noisy.snippets, cfg)
    step = loss_step(problem, cfg, "dense")
    for _ in range(3):
        step()
    with pytest.raises(ValueError, match="impl"):
        loss_step(problem, cfg, "sparse")


# ---------------------------------------------------------------- the study (rifelab.studies.coalign)

TINY = dict(
    frames=[20], resolutions=["32x24", "40x24"], dilations=[1, 3, 25], factor=2, iterations=120,
    stopping_rules=[{"rule": "plateau", "tol": 1e-4, "patience": 10}], refine_iterations=[0, 10], timing_repeats=1,
    example_frames=3,
)


@pytest.fixture
def restore_threads():
    """The cpu profile runs this study on one thread; give the rest of the session its thread count back."""
    old = torch.get_num_threads()
    yield
    torch.set_num_threads(old)


def test_study_smoke_run(tmp_path, restore_threads):
    from rifelab.studies import coalign as study

    npz = save_snippets_npz(tmp_path / "real.npz", synthetic_video(20, 24, 32, (1, 3), seed=7).snippets)
    res = study.run("cpu", {**TINY, "snippets_npz": str(npz)}, tmp_path / "results")
    base = tmp_path / "results" / "cpu"
    (out,) = (base / "coalign").iterdir()
    assert out.name.startswith("cpu-") and out == res.folder
    for name in ("methods_synthetic", "loss_step", "report004_quantities_synthetic", "published_vs_ours",
                 "real_snippets"):
        assert (out / f"{name}.csv").exists() and (out / f"{name}.md").exists(), name
    for name in ("loss_curves", "quality_vs_time", "frames"):
        assert (out / f"{name}.png").exists(), name
    assert not list((base / "coalign").glob(".*"))  # no partial folder left behind
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["params"]["threads"] == 1 and metrics["params"]["iterations"] == 120
    assert metrics["ground_truth"].startswith("synthetic")
    # the short headline that `dvc metrics show` prints
    headline = json.loads((base / "metrics" / "coalign.json").read_text())
    assert set(headline) == {"es_iterations", "es_speedup", "solver_speedup", "synthetic_abs_rel_ref",
                             "synthetic_abs_rel_es", "synthetic_abs_rel_solver", "target_es_met",
                             "target_solver_met", "environment"}
    assert headline == {**res.headline, "environment": headline["environment"]}
    assert headline["environment"]["profile"] == "cpu"
    assert 1 <= headline["es_iterations"] <= 120 and headline["solver_speedup"] > 1
    assert 0 <= headline["synthetic_abs_rel_solver"] < 0.05 and math.isfinite(headline["synthetic_abs_rel_ref"])
    assert headline["target_solver_met"] is metrics["targets"]["target_solver_met"]
    # plot data: one series each, unique x, the columns dvc.yaml declares
    plots = base / "plots" / "coalign"
    assert {p.name for p in plots.iterdir()} == {"abs_rel_per_method.csv", "time_per_method.csv", "loss_curve.csv"}
    assert_plots_readable("coalign", base)
    # the tables and sentences that show the truth say it is synthetic; claims are never "ours"
    methods = res.tables["methods_synthetic"]
    assert {"abs_rel_vs_synthetic", "delta1_vs_synthetic"} <= set(methods.columns)
    assert len(methods) == 2 * 9  # two cases x (ref, 1 rule, λ3=0 + its rule, 2 solvers, 3 baselines)
    assert all("synthetic" in c for c in res.tables["report004_quantities_synthetic"].columns)
    assert res.tables["published_vs_ours"]["ours"].str.startswith("n/a").all()
    text = "\n".join(res.summary)
    assert "synthetic" in res.summary[0] and ("**met**" in text or "**missed**" in text)
    assert "Target early stopping" in text and "Target solver" in text and "Real snippets (real.npz" in text
    assert "abs_rel_vs_synthetic" not in res.tables["real_snippets"].columns  # no truth for real snippets


def test_study_cuda_profile_needs_a_gpu(tmp_path):
    from rifelab.studies import coalign as study

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ParamError, match="cuda"):
        study.run("cuda", TINY, tmp_path)
    assert not any(tmp_path.rglob("*.csv"))


@pytest.mark.parametrize("bad, match", [
    ({"iterations": -5}, "'iterations'"),
    ({"stopping_rules": [{"rule": "sometimes", "tol": 1e-4, "patience": 30}]}, r"stopping_rules\[0\]\.rule"),
    ({"stopping_rules": [{"rule": "plateau", "tol": 1e-4, "patience": 0}]}, r"stopping_rules\[0\]\.patience"),
    ({"stopping_rules": [{"rule": "plateau", "tol": 1e-4}]}, "missing 'patience'"),
    ({"stopping_rules": ["plateau: 1e-4"]}, "stopping_rules"),
    ({"stopping_rules": []}, "empty"),
    ({"dilations": [3, 25]}, "lacks 1"),
    ({"frames": [4]}, "'frames"),
    ({"resolutions": ["32x16"], "border": 8}, "too small for coalign.border"),
    ({"snippet_dtype": "int8"}, "snippet_dtype"),
    ({"snippets_npz": "/nonexistent/snips.npz"}, "not found"),
    ({"itterations": 10}, "did you mean 'iterations'"),
])
def test_invalid_params_fail_before_any_file(tmp_path, bad, match):
    from rifelab.studies import coalign as study

    with pytest.raises(ParamError, match=match):
        study.run("cpu", {**TINY, **bad}, tmp_path)
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


# ---------------------------------------------------------------- notebook


@pytest.mark.notebook
def test_notebook_runs_with_tiny_parameters(tmp_path):
    from rifelab.publish.notebooks import run_notebook

    root = Path(__file__).resolve().parent.parent
    nb = json.loads((root / "notebooks" / "04_coalign.ipynb").read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert sum(len("".join(c["source"]).splitlines()) for c in code) <= 60
    run_notebook(root / "notebooks" / "04_coalign.ipynb", tmp_path / "out.ipynb", cwd=root,
                 parameters={"profile": "cpu", "overrides": TINY, "results_root": str(tmp_path)})
    (out,) = (tmp_path / "cpu" / "coalign").iterdir()
    assert (out / "methods_synthetic.csv").exists() and (out / "frames.png").exists()
    assert (tmp_path / "cpu" / "metrics" / "coalign.json").exists()
    executed = (tmp_path / "out.ipynb").read_text()
    assert "Target solver" in executed and "synthetic" in executed  # the generated summary was shown
    assert_figures_render(tmp_path / "out.ipynb", min_images=3)


# ---------------------------------------------------------------- degenerate input (issue 14)


def test_constant_snippets_are_refused_instead_of_nan(noisy):
    const = SnippetSet.from_arrays({1: np.full((18, 3, 8, 8), 0.5, np.float32)})  # gave NaN scales and shifts
    with pytest.raises(ValueError, match="every snippet is constant .*0.5.*scales and shifts are undefined"):
        align(const, AlignConfig(iterations=5, factor=1, border=0))
    # real snippets with two frames blanked to the minimum in every snippet that covers them
    arrays = {d: a.clone() for d, a in zip(noisy.snippets.requested, noisy.snippets.arrays)}
    lo = float(min(a.min() for a in arrays.values()))
    for d, a in arrays.items():
        de = effective_dilation(d, noisy.snippets.num_frames)
        idx = snippet_frames(a.shape[0], 3, de)
        a[(idx == 5) | (idx == 6)] = lo
    blanked = SnippetSet.from_arrays(arrays, num_frames=noisy.snippets.num_frames)
    with pytest.raises(ValueError, match=r"frames 5, 6 are constant at the global minimum"):
        align(blanked, CFG)


@pytest.mark.parametrize("field", ["lambda_scale", "lambda_shift", "lr", "depth_clip", "depth_loss_weight"])
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_config_is_refused(field, value):
    with pytest.raises(ValueError, match=rf"AlignConfig needs finite numbers, got {field}={value}"):
        AlignConfig(**{field: value})  # lambda_scale=NaN gave NaN scales and shifts


def test_divergence_is_refused_not_returned(noisy):
    with pytest.raises(ValueError, match="co-alignment diverged: non-finite scales/shifts"):
        align(noisy.snippets, AlignConfig(iterations=3, factor=2, lr=1e30))
