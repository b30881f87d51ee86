"""Interpolate many inputs into one output root: `rifelab batch`, spread over Ray actors (one per device).

    rifelab batch clips/*.mp4 shots/ -o out/ --multi 3                 # local Ray, started automatically
    rifelab batch --manifest inputs.txt -o out/ --ray-address auto    # every GPU of a running Ray cluster

Inputs are videos or folders of numbered frames, given as paths, glob patterns or a manifest file
(one path or pattern per line). Item NAME (a video's stem, a folder's name) is written to
OUTPUT_ROOT/NAME (frames) or OUTPUT_ROOT/NAME.EXT (`--video-ext`), by `interpolate_sequence`
with the options of `rifelab interpolate`.

Scale-out is Ray's: one actor per device holds a loaded model (one per GPU of the cluster, or
`--workers` CPU actors), and `ray.util.ActorPool` hands each free actor the next item. Without
Ray installed (or with `--no-ray`) the items run one after another in this process.

Atomic items and reruns: a frame-folder item is computed in OUTPUT_ROOT/.NAME.partial (frame by
frame, each frame atomic, with interpolate's manifest) and renamed to OUTPUT_ROOT/NAME when
complete; a video is encoded to a temporary file and renamed. A record of each finished item
(input, settings, model, counts) goes to OUTPUT_ROOT/.rifelab-batch/NAME.json. A rerun skips
items whose record matches the current settings, resumes partial folders with interpolate's
`--resume` (same checks, same frames as an uninterrupted run), and redoes the rest. A failing
item is reported in the summary and does not stop the others.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import re
import socket
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import pandas as pd
import torch

from rifelab.engines.spec import ModelSpec, load_model
from rifelab.frames.images import DataError
from rifelab.interpolate import raywatch
from rifelab.interpolate.pipeline import _model_device
from rifelab.interpolate.run import interpolate_sequence
from rifelab.interpolate.schedule import (
    JOURNAL_NAME,
    LOCK_NAME,
    MANIFEST_NAME,
    InterpolateConfig,
)
from rifelab.interpolate.sinks import read_manifest
from rifelab.interpolate.sources import open_source
from rifelab.interpolate.stages import logging_through_tqdm, progress_bar
from rifelab.publish.results import UnsafePathError, atomic_write_text, refuse_link
from rifelab.rife.contract import Interpolator

log = logging.getLogger(__name__)

__all__ = ["BatchItem", "ItemResult", "collect_inputs", "plan_items", "run_item", "run_batch", "results_table",
           "VIDEO_OUTPUT_EXTENSIONS"]

RECORD_DIR = ".rifelab-batch"
VIDEO_OUTPUT_EXTENSIONS = ("mp4", "mkv", "mov", "webm")
_GLOB_CHARS = re.compile(r"[*?\[]")


@dataclass(frozen=True)
class BatchItem:
    """One input and where it goes."""

    name: str
    input: str
    output: str  # OUTPUT_ROOT/NAME (frames) or OUTPUT_ROOT/NAME.EXT (video)

    @property
    def is_video_output(self) -> bool:
        return Path(self.output).suffix.lstrip(".").lower() in VIDEO_OUTPUT_EXTENSIONS


@dataclass
class ItemResult:
    """What happened to one item: status done | resumed | skipped | failed, with counts and timing."""

    item: str
    input: str
    output: str
    status: str
    frames_in: int | None = None
    frames_out: int | None = None
    frames_written: int = 0
    seconds: float = 0.0
    device: str = ""
    worker: str = ""
    error: str = ""

    @property
    def fps(self) -> float:
        """Frames written per second of this item's run."""
        return self.frames_written / self.seconds if self.seconds > 0 else float("nan")


# ----------------------------------------------------------------------------- inputs


def collect_inputs(paths: Sequence[str], manifest: str | os.PathLike | None = None,
                   exclude: str | os.PathLike | None = None) -> list[Path]:
    """Input paths from PATHS (globs expanded, sorted) and a manifest (one path or glob per line, '#' comments).

    Relative manifest lines are relative to the manifest's folder. Duplicates are dropped (first kept).
    """
    entries: list[tuple[str, Path]] = [(p, Path.cwd()) for p in paths]
    if manifest is not None:
        mpath = Path(manifest)
        if not mpath.is_file():
            raise DataError(f"manifest {mpath} not found; give a text file with one input path or glob per line")
        for line in mpath.read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                entries.append((line, mpath.parent))
    found: list[Path] = []
    for text, base in entries:
        p = Path(text).expanduser()
        p = p if p.is_absolute() else base / p
        if not p.exists() and _GLOB_CHARS.search(text):
            matches = sorted(Path(m) for m in glob.glob(str(p)))
            if not matches:
                raise DataError(f"the pattern {text!r} matches nothing")
            found.extend(matches)
        elif not p.exists():
            raise DataError(f"input not found: {text}; give videos or folders of numbered frames")
        else:
            found.append(p)
    unique = list(dict.fromkeys(p.resolve() for p in found))
    if exclude is not None:  # the output root (a rerun's glob matches it) and what is inside it are not inputs
        root = Path(exclude).resolve()
        unique = [p for p in unique if p != root and root not in p.parents]
    if not unique:
        raise DataError("no inputs: give videos or frame folders (paths or globs) or --manifest FILE")
    return unique


def plan_items(inputs: Sequence[Path], output_root: str | os.PathLike, video_ext: str | None = None) -> list[BatchItem]:
    """One item per input: NAME is a video's stem or a folder's name; two inputs with one NAME are refused."""
    root = Path(output_root)
    items: list[BatchItem] = []
    seen: dict[str, Path] = {}
    for p in inputs:
        name = p.name if p.is_dir() else p.stem
        if name.startswith(".") or not name:
            raise DataError(f"{p}: cannot name an output after it (hidden or empty name); rename the input")
        if name in seen:
            raise DataError(f"{seen[name]} and {p} would both be written to {root / name}; rename one of them")
        seen[name] = p
        out = root / (f"{name}.{video_ext}" if video_ext else name)
        items.append(BatchItem(name, str(p), str(out)))
    return items


# ----------------------------------------------------------------------------- one item


def _record_path(item: BatchItem) -> Path:
    return Path(item.output).parent / RECORD_DIR / f"{item.name}.json"


def _partial_path(item: BatchItem) -> Path:
    out = Path(item.output)
    return out.parent / f".{out.name}.partial"


def item_key(item: BatchItem, config: InterpolateConfig, model_info: dict[str, Any]) -> dict[str, Any]:
    """Everything a finished item must match to be skipped on a rerun."""
    return {
        "input": str(Path(item.input).resolve()),
        "output": Path(item.output).name,
        **config.settings(),
        "target_fps": config.target_fps,
        "fps_ratio": None if config.fps_ratio is None else str(config.fps_ratio),
        "input_fps": config.input_fps,
        "fps": config.fps,
        "crf": config.crf if item.is_video_output else None,
        "lossless": config.lossless if item.is_video_output else None,
        "model": model_info,
    }


def _read_record(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _ours(folder: Path) -> bool:
    """A folder `rifelab interpolate` wrote (its manifest is there)."""
    return (folder / MANIFEST_NAME).is_file()


def _remove_output_folder(folder: Path) -> None:
    """Remove a frame folder rifelab wrote: the frames its manifest records and the manifest; anything else stays."""
    manifest = read_manifest(folder) or {"frames": {}}
    for name in [*manifest["frames"], JOURNAL_NAME, MANIFEST_NAME, LOCK_NAME]:
        (folder / name).unlink(missing_ok=True)
    try:
        folder.rmdir()
    except OSError:
        log.warning("%s holds files rifelab did not write; left in place", folder)


def _link_error(path: Path) -> Exception:
    try:
        refuse_link(path)
    except UnsafePathError as exc:
        return exc
    return DataError(f"{path} is a symbolic link")


def _remove_empty_partial(partial: Path) -> None:
    """Remove the partial folder of a failed item when it holds no frame to resume (only rifelab's records)."""
    if partial.is_symlink() or not partial.is_dir():
        return
    try:
        manifest = read_manifest(partial)
    except DataError:
        return
    if manifest is not None and not any((partial / n).exists() for n in manifest["frames"]):
        _remove_output_folder(partial)


def run_item(
    item: BatchItem,
    model: Interpolator,
    config: InterpolateConfig,
    model_info: dict[str, Any] | None = None,
    on_frames: Callable[[int], None] | None = None,
    worker: str = "",
) -> ItemResult:
    """Interpolate one item atomically (skip it when done, resume it when partial); errors become a failed result."""
    info = model_info or {}
    key = item_key(item, config, info)
    final, partial, record = Path(item.output), _partial_path(item), _record_path(item)
    for link in (final, partial, record.parent):  # never written through
        if link.is_symlink():
            res = ItemResult(item.name, item.input, item.output, "failed", error=str(_link_error(link)))
            return res
    res = ItemResult(item.name, item.input, item.output, "failed", device=str(_model_device(model)), worker=worker)
    t0 = time.perf_counter()
    try:
        rec = _read_record(record)
        if final.exists():
            if rec is not None and rec.get("key") == key:
                s = rec.get("summary", {})
                res.status, res.frames_in, res.frames_out = "skipped", s.get("input_frames"), s.get("output_frames")
                if on_frames is not None and res.frames_out:
                    on_frames(int(res.frames_out))
                return res
            ours = (final.is_dir() and _ours(final)) if not item.is_video_output else rec is not None
            if not ours:
                fix = ("--overwrite replaces only rifelab's outputs, so move it away" if config.overwrite else
                       "move it away")
                raise DataError(f"{final} exists and was not written by rifelab; {fix} or choose another output root")
            if not config.overwrite:
                raise DataError(f"{final} exists with other settings; pass --overwrite to redo it (only rifelab's "
                                "outputs are replaced) or choose another output root")
        cfg = replace(config, progress=False, resume=False, overwrite=False)
        if item.is_video_output:  # interpolate removes what an interrupted encode left beside it
            cfg.overwrite = final.exists()
            target = final
        else:
            if partial.exists():
                cfg.resume, cfg.overwrite = not config.overwrite, config.overwrite
            target = partial
        written = [0]

        def on_frame(index: int, kind: str) -> None:
            written[0] += 1
            if on_frames is not None:
                on_frames(1)

        summary = interpolate_sequence(item.input, target, model, cfg, on_frame=on_frame, model_info=info)
        if not item.is_video_output:
            old = final.parent / f".{final.name}.old"
            if old.is_dir() and _ours(old):  # left by a swap that was killed halfway
                _remove_output_folder(old)
            if final.exists():  # --overwrite of a finished folder: swap, then remove the old frames
                os.replace(final, old)
                os.replace(partial, final)
                _remove_output_folder(old)
            else:
                os.replace(partial, final)
        done = {"key": key, "summary": summary.as_dict(), "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        atomic_write_text(record, json.dumps(done, indent=2, default=str) + "\n")
        if on_frames is not None and summary.kept_frames:
            on_frames(summary.kept_frames)
        res.status = "resumed" if summary.kept_frames else "done"
        res.frames_in, res.frames_out, res.frames_written = summary.input_frames, summary.output_frames, written[0]
        res.seconds = summary.seconds
    except Exception as exc:  # noqa: BLE001 - one failing item is reported, the others go on
        _remove_empty_partial(partial)
        res.status, res.error = "failed", f"{type(exc).__name__}: {exc}"
        res.seconds = time.perf_counter() - t0
        log.debug("item %s failed", item.name, exc_info=True)
    return res


def expected_frames(item: BatchItem, config: InterpolateConfig) -> int | None:
    """Output frames of an item, from its input's frame count (None when unknown or unreadable)."""
    try:
        src = open_source(item.input, config.input_fps)
    except Exception:  # noqa: BLE001 - the worker reports the error
        return None
    return config.output_count(src.count, src.fps, src.times)


# ----------------------------------------------------------------------------- workers


class _Worker:
    """A Ray actor: one model loaded from the spec it was shipped, on its device, running items one at a time."""

    def __init__(self, spec: ModelSpec, threads: int | None):
        if threads:
            torch.set_num_threads(threads)
        self.model = load_model(spec)
        self.name = f"{socket.gethostname()}:{os.getpid()}"

    def run(self, index: int, item: BatchItem, config: InterpolateConfig, model_info: dict[str, Any],
            progress: Any) -> tuple[int, ItemResult]:
        pending = [0, time.monotonic()]

        def on_frames(n: int) -> None:  # report to the driver's bar at most ~4 times a second
            pending[0] += n
            if time.monotonic() - pending[1] > 0.25:
                progress.put(pending[0])
                pending[0], pending[1] = 0, time.monotonic()

        res = run_item(item, self.model, config, model_info, on_frames, self.name)
        if pending[0]:
            progress.put(pending[0])
        return index, res


def _ray() -> Any:
    """The ray module, or None when it is not installed."""
    try:
        import ray
    except ImportError:
        return None
    return ray


def run_batch(
    items: Sequence[BatchItem],
    config: InterpolateConfig,
    spec: ModelSpec | None = None,
    model_info: dict[str, Any] | None = None,
    *,
    use_ray: bool = True,
    ray_address: str | None = None,
    workers: int | None = None,
    threads: int | None = None,
    progress: bool = True,
    model: Interpolator | None = None,
) -> list[ItemResult]:
    """Run every item; returns one result per item, in input order.

    With Ray: `workers` actors (default: one per GPU of the cluster when the device allows CUDA, else one
    CPU actor) are each shipped `spec` (default: ModelSpec(), the PyTorch fp32 engine), load the model once
    and use `threads` torch threads (default: a local Ray shares this machine's cores among the
    actors; a cluster gives 1). Ray is started locally unless `ray_address` names a cluster.
    Without Ray (not installed, or `use_ray=False`) the items run in this process on `model` (or the model
    loaded from `spec`), one after another.
    """
    config.validate()
    if not items:
        return []
    spec = spec or ModelSpec()
    ray = _ray() if use_ray else None
    if use_ray and ray is None:
        if ray_address:
            raise RuntimeError("--ray-address needs Ray: pip install 'rifelab[ray]'")
        print(f"rifelab batch: Ray is not installed, so the {len(items)} items run one after another in this "
              "process (pip install 'rifelab[ray]' to spread them over workers)", file=sys.stderr)
    totals = [expected_frames(it, config) for it in items]
    total = sum(totals) if totals and all(t is not None for t in totals) else None
    results: dict[int, ItemResult] = {}
    # log lines go above the bar, not through it; the bar is closed before the caller prints its summary
    with logging_through_tqdm(progress), progress_bar(total, "batch", enabled=progress, leave=True) as bar:

        def finished(i: int, res: ItemResult) -> None:
            results[i] = res
            failed = sum(r.status == "failed" for r in results.values())
            bar.set_postfix_str(f"items {len(results)}/{len(items)}" + (f", {failed} failed" if failed else ""))

        if ray is None:
            if model is None:
                if threads:
                    torch.set_num_threads(threads)
                model = load_model(spec)
            for i, item in enumerate(items):
                finished(i, run_item(item, model, config, model_info, bar.update, f"{socket.gethostname()}:{os.getpid()}"))
        else:
            _run_on_ray(ray, items, config, spec, model_info or {}, ray_address, workers, threads, bar, finished)
    for i, item in enumerate(items):  # items whose worker died before answering
        if i not in results:
            results[i] = ItemResult(item.name, item.input, item.output, "failed",
                                    error="the worker running this item was lost (crashed or killed)")
    return [results[i] for i in range(len(items))]


def _start_local_ray(ray: Any, num_cpus: int, attempts: int = 3) -> None:
    """`ray.init` of a local Ray for this run, tried again when its node times out during startup.

    On a loaded machine Ray's agents can miss the raylet's fixed startup wait (ray-project/ray#65983);
    a second start usually succeeds.
    """
    for attempt in range(1, attempts + 1):
        try:
            ray.init(num_cpus=num_cpus, include_dashboard=False)
            return
        except Exception as exc:  # noqa: BLE001 - Ray raises a bare Exception for this
            if "timed out during startup" not in str(exc) or attempt == attempts:
                raise
            log.warning("local Ray did not start (%s); trying again (%d/%d)", str(exc).splitlines()[0], attempt + 1,
                        attempts)
            ray.shutdown()


def _run_on_ray(ray: Any, items: Sequence[BatchItem], config: InterpolateConfig, spec: ModelSpec,
                model_info: dict[str, Any], address: str | None, workers: int | None, threads: int | None,
                bar: Any, finished: Callable[[int, ItemResult], None]) -> None:
    from ray.exceptions import RayActorError
    from ray.util.actor_pool import ActorPool
    from ray.util.queue import Queue

    local = not address and not ray.is_initialized()
    # torch threads per actor: --threads, else this machine's cores shared by the local actors, else 1 per actor
    cpus = max(1, threads or ((os.cpu_count() or 1) // (workers or 1) if local else 1))
    started, watchdog = False, None
    if not ray.is_initialized():
        if address:
            ray.init(address=address, include_dashboard=False)
        else:  # a local Ray dies with this driver, even on kill -9; what a killed run left is stopped first
            raywatch.reap_orphans()
            watchdog = raywatch.watch_descendants()
            try:
                _start_local_ray(ray, (workers or 1) * cpus)
            except BaseException:
                raywatch.release(watchdog)
                raise
        started = True
    try:
        gpus = int(ray.cluster_resources().get("GPU", 0)) if spec.device != "cpu" else 0
        if gpus:
            n, opts = workers or gpus, {"num_gpus": 1, "num_cpus": cpus}
        else:
            n, opts = workers or 1, {"num_cpus": cpus}
        log.info("batch: %d items on %d Ray actors (%s each)", len(items), n, opts)
        actor = ray.remote(_Worker)
        pool = ActorPool([actor.options(**opts).remote(spec, threads or cpus) for _ in range(n)])
        progress = Queue(actor_options={"num_cpus": 0})
        for i, item in enumerate(items):
            pool.submit(lambda a, v: a.run.remote(*v), (i, item, config, model_info, progress))
        while pool.has_next():
            try:
                i, res = pool.get_next_unordered(timeout=0.2)
                finished(i, res)
            except TimeoutError:
                pass
            except RayActorError as exc:
                log.error("a batch worker died: %s", str(exc).splitlines()[0])
            while not progress.empty():
                bar.update(sum(progress.get_nowait_batch(progress.qsize())))
    finally:
        if started:
            ray.shutdown()
        raywatch.release(watchdog)  # stops what Ray's shutdown left running (its agents linger for minutes)


# ----------------------------------------------------------------------------- summary


def results_table(results: Sequence[ItemResult]) -> pd.DataFrame:
    """One row per item: item, frames in/out, seconds, fps, device, status, worker (host:pid) and any error."""
    rows = [{"item": r.item, "frames_in": r.frames_in, "frames_out": r.frames_out, "seconds": round(r.seconds, 3),
             "fps": round(r.fps, 3), "device": r.device, "status": r.status, "worker": r.worker, "error": r.error}
            for r in results]
    return pd.DataFrame(rows, columns=["item", "frames_in", "frames_out", "seconds", "fps", "device", "status",
                                       "worker", "error"])
