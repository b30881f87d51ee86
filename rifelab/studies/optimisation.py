"""Optimisation study: every PyTorch configuration and every other backend timed side by side, on real frames.

Each configuration (a YAML mapping in the profile's params file) names a backend (torch by default, onnxruntime,
openvino, tensorrt), a precision (`dtype`) and, for torch, the rifelab.engines.torch_engine switches. It also declares what it
needs (`requires`: cuda, mps, native_bf16, native_fp16, vnni, compile, or a backend package); a backend adds its own
needs. A configuration whose needs are not met is reported as skipped with the reason; one whose warm calls take
more than `max_slowdown` times the baseline's is stopped and reported as too slow. Nothing is dropped silently.

Each configuration runs in its own worker process (rifelab.measure.harness), built (compiled, calibrated) once; per
resolution, the coordinator times them in interleaved rounds with the FP32 eager baseline, one computing at a time,
and records the machine's load and each row's worker id. The run checks itself (spread of the repeats, outside load,
speedups inside `max_speedup`, FP32 eager agreeing with the baseline study of the same results folder), re-measures
a bounded number of times and publishes a timing that still fails flagged `noisy` (headline, table, sentences).
Quality is measured from the outputs the workers return: against the baseline's output on real frame pairs, and
for INT8 configurations against the ground-truth middle frames of held-out real triplets. INT8 calibration frames, held-out triplets
and the timed/scored pairs come from disjoint frame ranges, checked before anything runs.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field, fields
from typing import Any, Mapping

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from rifelab.publish import claims
from rifelab.frames.assets import CLIPS
from rifelab.engines.backends import (
    BACKENDS,
    PRECISIONS,
    backend_problem,
    capabilities,
    missing_requirements,
)
from rifelab.measure.benchmark import agreement, parse_resolution, real_frame_pair
from rifelab.frames.clips import Triplet
from rifelab.frames.splits import SplitError, check_disjoint, range_frames, range_triplets
from rifelab.engines.torch_engine import EngineConfig, parse_config
from rifelab.measure.harness import Harness, InterleavedTiming, noise_limits
from rifelab.measure.metrics import psnr, ssim
from rifelab.measure.workloads import FrameInputs, InterpolateWorkload, ModelSpec
from rifelab.rife.model import RIFE
from rifelab.rife.network import VALID_SCALES
from rifelab.studies.base import Param, ParamError, StudyResult, StudyRun

log = logging.getLogger(__name__)

__all__ = ["PARAMS", "NOTEBOOK", "StudyConfig", "study_configs", "frames_used", "run"]

NOTEBOOK = "02_optimisation.ipynb"
QUALITY_PAIR_STEP = 8  # quality pair k starts at frame k * 8 of the clip

PARAMS: dict[str, Param] = {
    "resolutions": Param("list", "frame sizes timed", item="resolution"),
    "target_resolution": Param("resolution", "where the targets are judged"),
    "baseline": Param("str", "name of the plain FP32 eager torch configuration (speedups are relative to it)"),
    "configs": Param("list", "configurations: mappings with name, backend, dtype, engine switches, requires, "
                     "resolutions", item="dict"),
    "clip": Param("str", "real clip whose frame pairs are timed and scored (resized per resolution)", choices=CLIPS),
    "quality_pairs": Param("int", f"real pairs scored against the baseline's output (pair k at frame {QUALITY_PAIR_STEP}k)",
                           low=1),
    "warmup": Param("int", "unrecorded calls per configuration after the first (compile/capture/calibration) call",
                    low=1),
    "repeats": Param("int", "interleaved timed rounds (one call of every configuration each)", low=2),
    "max_slowdown": Param("float", "too-slow guard: stop a configuration whose warm call exceeds this times the "
                          "baseline's", low=1.0),
    "timestep": Param("float", "t of the interpolated frame", low=0.0, high=1.0),
    "scale": Param("float", "RIFE flow scale", choices=VALID_SCALES),
    "int8_calibration": Param("dict", "clip -> [start, stop) frames for INT8 calibration (never scored)"),
    "int8_calibration_pairs": Param("int", "calibration pairs for INT8", low=1),
    "heldout_ranges": Param("dict", "clip -> [start, stop) frames of the held-out ground-truth triplets"),
    "heldout_triplets": Param("int", "held-out triplets per clip (INT8 vs ground truth)", low=1),
    "fp32_quality_db": Param("float", "PSNR vs FP32 eager at or above which a path counts as FP32 quality", low=0),
    "target_speedup": Param("float", "target: fastest FP32-quality path vs FP32 eager at target_resolution", low=0),
    "int8_target_speedup": Param("float", "target: INT8 vs FP32 eager at target_resolution", low=0),
    "int8_max_loss_db": Param("float", "target: INT8 PSNR loss vs ground truth at most this (dB)", low=0),
    "target_fps": Param("float", "target (cuda profile): output fps of the best FP32-quality path", low=0,
                        nullable=True),
    "noise": Param("dict", "when the timing counts as disturbed: max_spread (p90/p10), max_other_cpu (cores other "
                   "processes may use), max_steal (share), attempts (timings in all before publishing flagged noisy)"),
    "max_speedup": Param("float", "physical bound: a speedup over FP32 eager above this fails the run's checks", low=1),
    "baseline_agreement": Param("float", "FP32 eager here and in the baseline study of the same results folder may "
                                "differ by at most this share", low=0),
    "progress": Param("bool", "tqdm progress bars", tracked=False),
}

_CONFIG_KEYS = {"name", "backend", "requires", "resolutions"}
_ENGINE_KEYS = {f.name for f in fields(EngineConfig)} - {"name"}
_OPENVINO_INT8_KEYS = {"int8_fp32_blocks"}  # IFNet blocks whose convolutions stay fp32 in an INT8 model


@dataclass
class StudyConfig:
    """One configuration: backend, precision, engine switches (torch), requirements and resolutions."""

    name: str
    backend: str = "torch"
    dtype: str = "fp32"
    options: dict[str, Any] = field(default_factory=dict)  # rifelab.engines.torch_engine switches (torch only)
    requires: list[str] = field(default_factory=list)
    resolutions: list[str] | None = None  # None: every resolution of the study

    def problems(self, device: torch.device) -> list[str]:
        """Why this configuration cannot run here (declared needs, then the backend's own); empty if it can."""
        out = missing_requirements(self.requires, device)
        problem = backend_problem(self.backend, self.dtype, device)
        return out + ([problem] if problem and problem not in out else [])


def study_configs(entries: list[dict[str, Any]], baseline: str) -> list[StudyConfig]:
    """Parse the `configs` mappings; the baseline (plain FP32 eager torch) comes first."""
    out: list[StudyConfig] = []
    for i, e in enumerate(entries):
        if not isinstance(e, dict) or not isinstance(e.get("name"), str):
            raise ParamError(f"configs[{i}] = {e!r}: expected a mapping with a 'name', e.g. {{name: bf16, dtype: bf16}}")
        name, backend = e["name"], e.get("backend", "torch")
        if backend not in BACKENDS:
            raise ParamError(f"config {name!r}: backend {backend!r} is not one of {list(BACKENDS)}")
        dtype = e.get("dtype", "fp32")
        if dtype not in PRECISIONS[backend]:
            raise ParamError(f"config {name!r}: backend {backend} runs {list(PRECISIONS[backend])}, not dtype {dtype!r}")
        allowed = _CONFIG_KEYS | {"dtype"} | (_ENGINE_KEYS if backend == "torch" else set()) | (
            _OPENVINO_INT8_KEYS if (backend, dtype) == ("openvino", "int8") else set())
        unknown = sorted(set(e) - allowed)
        if unknown:
            raise ParamError(f"config {name!r}: unknown key(s) {unknown}; a {backend} config takes {sorted(allowed)}")
        options = {k: v for k, v in e.items() if (k in _ENGINE_KEYS and k != "dtype") or k in _OPENVINO_INT8_KEYS}
        if backend == "torch":
            try:
                parse_config({"dtype": dtype, **options}, name=name)
            except ValueError as exc:
                raise ParamError(f"config {name!r}: {exc}") from None
        requires = e.get("requires", [])
        try:
            missing_requirements(requires, "cpu")
        except ValueError as exc:
            raise ParamError(f"config {name!r}: {exc}") from None
        res = e.get("resolutions")
        if res is not None:
            res = Param("list", "resolutions this config runs at", item="resolution").check(f"{name}.resolutions", res)
        out.append(StudyConfig(name, backend, dtype, options, list(requires), res or None))
    names = [c.name for c in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ParamError(f"config names must be unique; repeated: {dup}")
    base = next((c for c in out if c.name == baseline), None)
    if base is None:
        raise ParamError(f"baseline {baseline!r} is not among the configs ({', '.join(names)}); add it")
    if base.backend != "torch" or base.dtype != "fp32" or base.options or base.requires or base.resolutions:
        raise ParamError(f"baseline {baseline!r} must be plain torch fp32 eager at every resolution, with no options")
    return [base] + [c for c in out if c is not base]


def frames_used(p: Mapping[str, Any]) -> dict[str, dict[str, range | list[int]]]:
    """Frames each part of the study reads: quality pairs, held-out triplets, INT8 calibration (clip -> frames)."""
    quality = {p["clip"]: sorted({f for k in range(p["quality_pairs"]) for f in (k * QUALITY_PAIR_STEP,
                                                                                k * QUALITY_PAIR_STEP + 1)})}
    return {"quality pairs": quality, "held-out triplets": range_frames(p["heldout_ranges"], "heldout_ranges"),
            "INT8 calibration": range_frames(p["int8_calibration"], "int8_calibration")}


def check_splits(p: Mapping[str, Any]) -> None:
    """Refuse ranges that are malformed or where calibration, held-out triplets and quality pairs share frames."""
    try:
        check_disjoint(frames_used(p))
    except SplitError as exc:
        raise ParamError(f"optimisation: {exc}") from None


def _workload(c: StudyConfig, run: StudyRun) -> InterpolateWorkload:
    """What c's worker process builds and times (INT8: calibrated at the target resolution, on unscored frames)."""
    p = run.params
    cal = None
    if c.dtype == "int8":
        w, h = parse_resolution(p["target_resolution"])
        cal = (p["int8_calibration_pairs"], w, h, tuple((k, tuple(v)) for k, v in p["int8_calibration"].items()))
    spec = ModelSpec.make(c.options, backend=c.backend, precision=c.dtype, checkpoint=p["checkpoint"],
                          device=str(run.device), threads=p["threads"], name=c.name, calibration=cal)
    return InterpolateWorkload(spec, p["timestep"], p["scale"])


def _baseline_reference(run: StudyRun) -> dict[str, float]:
    """FP32 eager median ms per resolution from the baseline study in this results folder (same device), if any."""
    path = run.base / "metrics" / "baseline.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if data.get("environment", {}).get("device_name") != run.env["device_name"]:
        return {}
    return {k[3:]: float(v) for k, v in data.items() if k.startswith("ms_") and v is not None}


def _checks(p: Mapping[str, Any], res: str, reference: Mapping[str, float]):
    """The study's own consistency checks of one resolution's timing (the harness adds spread and load)."""
    def check(t: InterleavedTiming) -> list[str]:
        base = t.timings[p["baseline"]].median
        out = [f"{n}: {base / tm.median:.2f}x FP32 eager, beyond the physical bound of {p['max_speedup']:g}x"
               for n, tm in t.timings.items() if base / tm.median > p["max_speedup"]]
        ref = reference.get(res)
        if ref:
            ours = base * 1e3
            if abs(ours - ref) / ref > p["baseline_agreement"]:
                out.append(f"FP32 eager {ours:.1f} ms here but {ref:.1f} ms in the baseline study at {res} "
                           f"(differ by more than {p['baseline_agreement']:.0%})")
        return out
    return check


def _score_heldout(preds: Mapping[str, list], triplets: list[Triplet], baseline: str) -> pd.DataFrame:
    """PSNR/SSIM against the held-out ground truth, per configuration (means), from the workers' predictions."""
    rows = [{"config": name, "psnr": float(psnr(pred, tri.gt)[0]), "ssim": float(ssim(pred, tri.gt)[0])}
            for name, ps in preds.items() for pred, tri in zip(ps, triplets)]
    gt = pd.DataFrame(rows).groupby("config", sort=False)[["psnr", "ssim"]].mean().reset_index()
    gt["n"] = len(triplets)
    gt["psnr_change_db"] = gt["psnr"] - float(gt.loc[gt.config == baseline, "psnr"].iloc[0])
    return gt


def heldout_triplets(p: Mapping[str, Any]) -> list[Triplet]:
    """Held-out triplets, `heldout_triplets` per clip, none sharing a frame, resized to the target resolution (where
    INT8 was calibrated); named '<clip>:<first frame>'."""
    return range_triplets(p["heldout_ranges"], p["heldout_triplets"], layout="apart", skip_cuts=False,
                          size=parse_resolution(p["target_resolution"]), name="heldout_ranges")


def _speedup_figure(df: pd.DataFrame, title: str) -> plt.Figure:
    ran = df[df.status == "ran"]
    res = list(dict.fromkeys(ran["resolution"]))
    names = list(dict.fromkeys(ran["config"]))
    fig, ax = plt.subplots(figsize=(max(6, 0.8 * len(names) + 2), 4))
    width = 0.8 / max(1, len(res))
    for j, r in enumerate(res):
        sub = ran[ran.resolution == r].set_index("config")
        xs = [i + (j - (len(res) - 1) / 2) * width for i, n in enumerate(names) if n in sub.index]
        rows = [sub.loc[n] for n in names if n in sub.index]
        ys = [row["speedup"] for row in rows]
        err = [[y - row["speedup_p10"] for y, row in zip(ys, rows)], [row["speedup_p90"] - y for y, row in zip(ys, rows)]]
        ax.bar(xs, ys, width, yerr=err, capsize=2, label=r)
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=30, ha="right")
    ax.set_ylabel("speedup over FP32 eager (x)")
    ax.set_title(title)
    ax.legend(title="resolution")
    fig.tight_layout()
    return fig


def _quality_figure(df: pd.DataFrame, title: str) -> plt.Figure:
    ran = df[df.status == "ran"]
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for marker, (r, sub) in zip("osD^v", ran.groupby("resolution", sort=False)):
        ax.scatter(sub["speedup"], sub["psnr_vs_fp32_db"], marker=marker, label=r)
        for row in sub.itertuples():
            ax.annotate(row.config, (row.speedup, row.psnr_vs_fp32_db), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")
    ax.axvline(1.0, color="k", lw=0.6)
    ax.set_xlabel("speedup over FP32 eager (x)")
    ax.set_ylabel("PSNR vs FP32 eager output (dB; 99 = identical)")
    ax.set_title(title)
    ax.legend(title="resolution")
    fig.tight_layout()
    return fig


def _verdict(value: float | None, target: float, above: bool = True) -> str:
    if value is None or not np.isfinite(value):
        return "not measured"
    ok = value >= target if above else value <= target
    return f"{'met' if ok else 'missed'} ({value:.2f} vs target {'>=' if above else '<='} {target:g})"


@dataclass
class Setup:
    """Checked configurations and splits, what cannot run here (and why), the held-out triplets, the model's name."""

    configs: list[StudyConfig]
    skipped: dict[str, str]
    int8: list[str]
    triplets: list[Triplet]
    reference: dict[str, float]
    limits: Any
    model: RIFE


@dataclass
class Measured:
    """Every resolution timed (checked, per resolution) and scored: result rows and the held-out predictions."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    held: dict[str, list] = field(default_factory=dict)
    timings: dict[str, InterleavedTiming] = field(default_factory=dict)


@dataclass
class Published:
    """The results split by outcome, and the resolutions whose timing stayed noisy."""

    ran: pd.DataFrame
    not_run: pd.DataFrame
    noisy: pd.DataFrame


@dataclass
class Targets:
    """The rows the targets are judged on, at the target resolution."""

    at: pd.DataFrame
    best: pd.Series | None  # fastest at FP32 quality
    fastest: pd.Series | None
    int8: pd.DataFrame  # INT8 rows with their change against the ground truth
    int8_pick: pd.Series | None  # the fastest INT8 path within the loss budget, else the fastest
    int8_loss: float | None


def prepare(run: StudyRun) -> Setup:
    """Every check before the model loads; what cannot run here; the held-out triplets; the baseline reference."""
    p, dev = run.params, run.device
    configs = study_configs(p["configs"], p["baseline"])
    check_splits(p)
    if p["target_resolution"] not in p["resolutions"]:
        raise ParamError(f"target_resolution {p['target_resolution']} is not among resolutions {p['resolutions']}")
    try:
        limits = noise_limits(p["noise"])
    except ValueError as exc:
        raise ParamError(f"optimisation.{exc}") from None
    skipped = {c.name: "; ".join(c.problems(dev)) for c in configs if c.problems(dev)}
    int8 = [c.name for c in configs if c.dtype == "int8" and c.name not in skipped]
    triplets = heldout_triplets(p) if int8 else []
    reference = _baseline_reference(run)
    model = run.model()  # names the network; the timed models are built in the workers
    return Setup(configs, skipped, int8, triplets, reference, limits, model)


def _not_run_row(row: dict[str, Any], reason: str) -> dict[str, Any]:
    status = "too slow" if reason.startswith("too slow") else ("failed" if reason.startswith("failed") else "skipped")
    return {**row, "status": status, "reason": reason}


def measure_resolution(run: StudyRun, setup: Setup, h: Harness, res: str, m: Measured,
                       outputs: dict[tuple[str, str], torch.Tensor]) -> None:
    """Time the configs of one resolution interleaved with the baseline in their workers, then score their outputs."""
    p, skipped = run.params, setup.skipped
    w, h_ = parse_resolution(res)
    pairs = [real_frame_pair(w, h_, p["clip"], k * QUALITY_PAIR_STEP, run.device) for k in range(p["quality_pairs"])]
    here = [c for c in setup.configs if (c.resolutions is None or res in c.resolutions)]
    scored = setup.triplets if res == p["target_resolution"] else []
    h.prepare({c.name: FrameInputs.from_tensors(pairs, [(t.frame0, t.frame2) for t in scored]
                                                if c.name in [p["baseline"], *setup.int8] else [])
               for c in here if c.name not in skipped})
    timing = m.timings[res] = h.measure_checked(
        setup.limits, _checks(p, res, setup.reference), names=[c.name for c in here if c.name not in skipped],
        warmup=p["warmup"], rounds=p["repeats"], baseline=p["baseline"], max_slowdown=p["max_slowdown"])
    base_t = timing.timings[p["baseline"]]
    for c in here:
        row: dict[str, Any] = {"config": c.name, "backend": c.backend, "dtype": c.dtype, "resolution": res,
                               "model": f"RIFE {setup.model.layout.name}"}
        if c.name in skipped or c.name in timing.stopped:
            m.rows.append(_not_run_row(row, skipped.get(c.name) or timing.stopped[c.name]))
            continue
        t = timing.timings[c.name]
        out, facts = h.outputs(c.name)
        outputs[(c.name, res)] = torch.from_numpy(out["pairs"])
        if out["heldout"]:
            m.held[c.name] = out["heldout"]
        m.rows.append({**row, "status": "ran", "reason": "", **t.as_dict(),
                       "speedup": base_t.median / t.median, "speedup_p10": base_t.median / t.p90,
                       "speedup_p90": base_t.median / t.p10, "first_call_s": timing.first_call_s[c.name],
                       "peak_mem_mib": facts["peak_mem_mib"], "peak_mem_kind": facts["peak_mem_kind"],
                       **agreement(outputs[(c.name, res)], outputs[(p["baseline"], res)]),
                       "applied": "; ".join(f"{k}: {v}" for k, v in facts["applied"].items()),
                       "options_skipped": "; ".join(f"{k}: {v}" for k, v in facts["skipped"].items()),
                       "worker": timing.workers[c.name], "noisy": timing.noisy,
                       "timing_attempts": timing.attempts})


def measure(run: StudyRun, setup: Setup) -> Measured:
    """Every configuration built once in its own worker process; every resolution timed and scored."""
    p, skipped = run.params, setup.skipped
    m = Measured()
    outputs: dict[tuple[str, str], torch.Tensor] = {}
    with Harness.isolated({c.name: _workload(c, run) for c in setup.configs if c.name not in skipped},
                          run.progress) as h:
        for name, err in h.errors.items():  # cannot run here: skipped with the reason; any other error: failed
            if err.kind == "BackendUnavailable":
                skipped[name] = str(err).removeprefix("BackendUnavailable: ")
                h.stopped.pop(name)
        if p["baseline"] in h.stopped:
            raise RuntimeError(f"the baseline {p['baseline']} could not be built: {h.stopped[p['baseline']]}")
        for res in p["resolutions"]:
            measure_resolution(run, setup, h, res, m, outputs)
    return m


def publish_timings(run: StudyRun, m: Measured) -> Published:
    """The load, results, speedup and skipped tables and both figures."""
    load = run.table(pd.DataFrame([{"resolution": r, "noisy": t.noisy, "attempts": t.attempts,
                                    "failed_checks": "; ".join(t.problems), **(t.load.as_dict() if t.load else {})}
                                   for r, t in m.timings.items()]), "timing_load")
    df = run.table(pd.DataFrame(m.rows), "results")
    ran = df[df.status == "ran"]
    run.table(ran.pivot_table(index="config", columns="resolution", values="speedup", sort=False), "speedup")
    not_run = run.table(df[df.status != "ran"][["config", "resolution", "status", "reason"]], "skipped_or_stopped")
    title = run.env["device_name"]
    run.figure(_speedup_figure(df, f"Speedup over FP32 eager, same run ({title})"), "speedup_bars")
    run.figure(_quality_figure(df, f"Quality against speed ({title})"), "quality_vs_speed")
    return Published(ran, not_run, load[load.noisy])


def int8_vs_ground_truth(run: StudyRun, setup: Setup, m: Measured, ran: pd.DataFrame) -> pd.DataFrame:
    """INT8 configs that ran at the target resolution (and the baseline) against the held-out ground truth, from the
    workers' predictions."""
    p = run.params
    int8 = [n for n in setup.int8 if not ran[(ran.config == n) & (ran.resolution == p["target_resolution"])].empty]
    if not (int8 and p["baseline"] in m.held):
        return pd.DataFrame()
    return run.table(_score_heldout({n: m.held[n] for n in [p["baseline"], *int8] if n in m.held}, setup.triplets,
                                    p["baseline"]), "int8_vs_ground_truth")


def publish_anchors(run: StudyRun, model: RIFE, ran: pd.DataFrame) -> None:
    """Published figures beside our best output fps, labelled as theirs."""
    best_fps = {("RIFE " + model.variant, r, "output fps"): float(g.fps.max()) for r, g in ran.groupby("resolution")}
    run.table(claims.beside_ours(claims.claims("optimisation"), best_fps, f"ours (RIFE {model.variant}, this run)")
              .dropna(axis=1, how="all"), "published_anchors")


def pick_targets(p: Mapping[str, Any], ran: pd.DataFrame, gt: pd.DataFrame) -> Targets:
    """The rows each target is judged on at the target resolution."""
    at = ran[ran.resolution == p["target_resolution"]]
    fp32q = at[at.psnr_vs_fp32_db >= p["fp32_quality_db"]]
    best = fp32q.loc[fp32q.speedup.idxmax()] if not fp32q.empty else None
    fastest = at.loc[at.speedup.idxmax()] if not at.empty else None
    i8 = at[at.dtype == "int8"].merge(gt[["config", "psnr_change_db"]], on="config", how="left") if not gt.empty \
        else at[at.dtype == "int8"].assign(psnr_change_db=float("nan"))
    within = i8[-i8.psnr_change_db <= p["int8_max_loss_db"]]
    pool = within if not within.empty else i8  # the fastest INT8 path within the loss budget, else the fastest
    i8row = pool.loc[pool.speedup.idxmax()] if not pool.empty else None
    i8loss = None if i8row is None or pd.isna(i8row["psnr_change_db"]) else float(-i8row["psnr_change_db"])
    return Targets(at, best, fastest, i8, i8row, i8loss)


def judge_targets(p: Mapping[str, Any], t: Targets, noisy: pd.DataFrame) -> dict[str, str]:
    """Each target: met or missed with the measured value (flagged when the target resolution's timing is noisy)."""
    flag = " (noisy timing: not a clean result)" if p["target_resolution"] in set(noisy.resolution) else ""
    verdicts = {}
    if t.best is not None:
        verdicts["fp32_quality"] = _verdict(t.best["speedup"], p["target_speedup"]) + flag
    if p["target_fps"] is not None and t.best is not None:
        verdicts["fps"] = _verdict(t.best["fps"], p["target_fps"]) + flag
    if t.int8_pick is not None:
        verdicts["int8_speedup"] = _verdict(t.int8_pick["speedup"], p["int8_target_speedup"]) + flag
        verdicts["int8_loss"] = _verdict(t.int8_loss, p["int8_max_loss_db"], above=False)
    return verdicts


def _resolution_lines(p: Mapping[str, Any], ran: pd.DataFrame, noisy: pd.DataFrame) -> list[str]:
    lines = [f"**noisy timing at {r.resolution}**: after {r.attempts} timings these checks still failed: "
             f"{r.failed_checks}. Its latencies and speedups are published flagged, not as clean results; rerun "
             f"on an idle machine" for r in noisy.itertuples()]
    for r, g in ran.groupby("resolution", sort=False):
        f = g.loc[g.speedup.idxmax()]
        lines.append(f"{'(noisy) ' if r in set(noisy.resolution) else ''}**{r}**: FP32 eager "
                     f"{g.loc[g.config == p['baseline'], 'median_ms'].iloc[0]:.1f} ms; "
                     f"fastest **{f['config']}** ({f['backend']}, {f['dtype']}) {f['median_ms']:.1f} ms "
                     f"(p10-p90 {f['p10_ms']:.1f}-{f['p90_ms']:.1f}), **{f['speedup']:.2f}x**, {f['fps']:.2f} fps, "
                     f"PSNR vs FP32 {f['psnr_vs_fp32_db']:.1f} dB")
    return lines


def summary_lines(p: Mapping[str, Any], pub: Published, m: Measured, gt: pd.DataFrame, t: Targets,
                  verdicts: Mapping[str, str], cap: Any) -> list[str]:
    """The summary: noisy resolutions, per resolution, each target, INT8 variants, load, CPU ISA, what did not run."""
    lines = _resolution_lines(p, pub.ran, pub.noisy)
    best, i8row = t.best, t.int8_pick
    if best is not None:
        lines.append(f"fastest path at FP32 quality (PSNR vs FP32 >= {p['fp32_quality_db']:g} dB) at "
                     f"{p['target_resolution']}: **{best['config']}**, {best['speedup']:.2f}x FP32 eager: target "
                     f"{verdicts['fp32_quality']}")
    if t.fastest is not None:
        lines.append(f"every engine timed in this run is a rifelab backend, so none is faster than rifelab's best; "
                     f"the fastest at {p['target_resolution']} is {t.fastest['config']} ({t.fastest['speedup']:.2f}x)")
    if "fps" in verdicts:
        lines.append(f"output fps of {best['config']} at {p['target_resolution']}: {verdicts['fps']}")
    if i8row is not None:
        lines.append(f"INT8 ({i8row['config']}): {i8row['speedup']:.2f}x FP32 eager, target {verdicts['int8_speedup']}; "
                     f"PSNR {i8row['psnr_vs_fp32_db']:.1f} dB vs the FP32 output; change against the ground truth "
                     f"of {int(gt['n'].iloc[0])} held-out triplets {-(t.int8_loss or 0):+.2f} dB, target "
                     f"{verdicts['int8_loss']}")
    lines += [f"INT8 variant {r.config}: {r.speedup:.2f}x FP32 eager, {r.psnr_change_db:+.2f} dB against the ground "
              f"truth" for r in t.int8.itertuples() if i8row is not None and r.config != i8row["config"]]
    lines.append("timing: one worker process per configuration, interleaved rounds; load " + "; ".join(
        f"{r}: {tm.load.describe()}" for r, tm in m.timings.items() if tm.load))
    lines.append(f"CPU ISA: {cap.isa}. bf16/fp16 paths need native support (skipped otherwise); INT8 speed "
                 f"depends on VNNI/AMX ({'present' if cap.vnni or cap.amx else 'absent here'})")
    lines += [f"{r.config} @ {r.resolution}: {r.status}: {r.reason}" for r in pub.not_run.itertuples()]
    return lines


def _num(x: Any) -> float | None:
    return None if x is None or pd.isna(x) else round(float(x), 4)


def _headline(p: Mapping[str, Any], t: Targets, pub: Published) -> dict[str, Any]:
    at, best, i8row = t.at, t.best, t.int8_pick
    return {
        "baseline_ms": _num(at.loc[at.config == p["baseline"], "median_ms"].iloc[0]) if not at.empty else None,
        "best_fp32_quality_speedup": _num(best["speedup"]) if best is not None else None,
        "best_fp32_quality_config": best["config"] if best is not None else None,
        "int8_speedup": _num(i8row["speedup"]) if i8row is not None else None,
        "int8_loss_vs_gt_db": _num(t.int8_loss),
        "not_run": int(len(pub.not_run)),
        "noisy": bool(len(pub.noisy)),
    }


def _metrics(p: Mapping[str, Any], setup: Setup, m: Measured, pub: Published, gt: pd.DataFrame,
             verdicts: Mapping[str, str], cap: Any) -> dict[str, Any]:
    ran, not_run = pub.ran, pub.not_run
    return {"isa": cap.isa, "verdicts": verdicts, "noisy": bool(len(pub.noisy)),
            "timing": {r: {"noisy": t.noisy, "attempts": t.attempts, "failed_checks": t.problems,
                           "workers": t.workers, "load": t.load.as_dict() if t.load else None,
                           "history": t.history} for r, t in m.timings.items()},
            "baseline_reference_ms": setup.reference,
            "speedup": {f"{r.config}@{r.resolution}": r.speedup for r in ran.itertuples()},
            "psnr_vs_fp32_db": {f"{r.config}@{r.resolution}": r.psnr_vs_fp32_db for r in ran.itertuples()},
            "not_run": {f"{r.config}@{r.resolution}": f"{r.status}: {r.reason}" for r in not_run.itertuples()},
            "int8_vs_ground_truth": gt.to_dict("records"), "frames_used": {
                k: {c: [min(v), max(v)] for c, v in d.items()} for k, d in frames_used(p).items()}}


def run(
    profile: str = "cpu",
    overrides: Mapping[str, Any] | None = None,
    results_root: str | os.PathLike | None = None,
    params_path: str | os.PathLike | None = None,
) -> StudyResult:
    """Time every configuration interleaved at every resolution, score it, report skips, publish."""
    with StudyRun.start("optimisation", PARAMS, profile, overrides, results_root, params_path) as run:
        p = run.params
        setup = prepare(run)
        measured = measure(run, setup)
        pub = publish_timings(run, measured)
        gt = int8_vs_ground_truth(run, setup, measured, pub.ran)
        publish_anchors(run, setup.model, pub.ran)
        targets = pick_targets(p, pub.ran, gt)
        verdicts = judge_targets(p, targets, pub.noisy)
        cap = capabilities()
        lines = summary_lines(p, pub, measured, gt, targets, verdicts, cap)
        plots = {"speedup": pub.ran.assign(config_at=pub.ran.config + " @ " + pub.ran.resolution)[
            ["config_at", "speedup"]]}
        return run.finish(_metrics(p, setup, measured, pub, gt, verdicts, cap), _headline(p, targets, pub), plots,
                          lines)
