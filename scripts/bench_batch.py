"""Benchmark of `rifelab batch` (not a test): items/s and frames/s with 1 and 2 Ray workers on short real items.

    python scripts/bench_batch.py --items 6 --frames 5 --workers 1 2 --json /tmp/bench_batch.json

Items are folders of consecutive carphone frames (176x144). Ray is started once before the timed runs, so a
row's time covers the actors (each loads the model once), the items and the writes, not Ray's own startup
(printed separately). Every run writes to a fresh output root. Runs alternate between worker counts
(`--rounds`), so a change in machine load hits both alike; the table gives the median over rounds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from rifelab.interpolate.batch import collect_inputs, plan_items, run_batch
from rifelab.frames.clips import load_clip
from rifelab.frames.images import write_image
from rifelab.interpolate.schedule import InterpolateConfig
from rifelab.publish.results import atomic_write_text, to_markdown


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print a Markdown table (and save JSON with --json)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--items", type=int, default=6, help="number of items (frame folders), default 6")
    p.add_argument("--frames", type=int, default=5, help="input frames per item, default 5")
    p.add_argument("--multi", type=int, default=3, help="--multi of every item, default 3")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts to compare, default 1 2")
    p.add_argument("--threads", type=int, default=1, help="torch threads per worker, default 1")
    p.add_argument("--rounds", type=int, default=2, help="timed rounds per worker count (interleaved), default 2")
    p.add_argument("--json", default=None, help="also save the rows here")
    args = p.parse_args(argv)

    import pandas as pd
    import ray

    clip = load_clip("carphone", max_frames=args.items * args.frames)
    t0 = time.perf_counter()
    ray.init(num_cpus=max(args.workers) * args.threads, include_dashboard=False)
    ray_start = time.perf_counter() - t0
    samples: dict[int, list[float]] = {w: [] for w in args.workers}
    frames_out = 0
    try:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            for i in range(args.items):
                d = root / "in" / f"item{i}"
                d.mkdir(parents=True)
                for j in range(args.frames):
                    write_image(d / f"{j:03d}.png", clip[i * args.frames + j])
            inputs = collect_inputs([str(root / "in" / "item*")])
            cfg = InterpolateConfig(multi=args.multi, batch_size=2, progress=False)
            for r in range(args.rounds):
                for w in args.workers:
                    items = plan_items(inputs, root / f"out_{w}_{r}")
                    t = time.perf_counter()
                    res = run_batch(items, cfg, {"device": "cpu", "threads": args.threads}, {}, workers=w,
                                    threads=args.threads, progress=False)
                    samples[w].append(time.perf_counter() - t)
                    bad = [x for x in res if x.status != "done"]
                    if bad:
                        print(f"failed items: {bad}", file=sys.stderr)
                        return 1
                    frames_out = sum(x.frames_out for x in res)
    finally:
        ray.shutdown()
    rows = []
    for w, s in samples.items():
        med = statistics.median(s)
        rows.append({"workers": w, "items": args.items, "frames_out": frames_out, "median_s": med,
                     "min_s": min(s), "max_s": max(s), "items_per_s": args.items / med,
                     "frames_per_s": frames_out / med, "rounds": len(s)})
    df = pd.DataFrame(rows)
    print(f"# Ray start (not in the rows): {ray_start:.1f} s")
    print(to_markdown(df, floatfmt=".3f"))
    if args.json:
        atomic_write_text(args.json, json.dumps({"ray_start_s": ray_start, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
