"""Command line of the device run (what scripts/device_run.sh calls); imports nothing the device machine lacks.

    python -m rifelab.devicerun.cli run OUT [--smoke] [--inputs .device_inputs]
    python -m rifelab.devicerun.cli part NAME --work DIR --deadline EPOCH      (internal: one part, own process)

Preparing the inputs and rendering the results happen here, with the full install: `rifelab device-prepare`,
`rifelab device-report` (rifelab/cli.py).
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import signal
import sys
from pathlib import Path

from rifelab.devicerun.inputs import INPUTS_DIR
from rifelab.devicerun.parts import PART_FUNCTIONS, run_part
from rifelab.devicerun.runner import DEADLINE_S, run

ROOT = Path(__file__).resolve().parents[2]


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m rifelab.devicerun.cli",
                                 description="Measure the cuda profile on a lent GPU machine (or a CPU smoke run) "
                                             "and write one archive of results.")
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="measure and write OUT/device_run.tar.gz",
                       description="Time every configuration of the plan on real frames, each part in its own "
                                   "process under one global deadline, and write one archive into OUT.")
    p.add_argument("out", help="folder the archive is written to (the device tool's $OUT)")
    p.add_argument("--smoke", action="store_true",
                   help="CPU smoke run: one tiny resolution, two configurations, checks the archive's layout")
    p.add_argument("--inputs", default=str(ROOT / INPUTS_DIR),
                   help=f"prepared inputs (frames, weights, commit; default {INPUTS_DIR}/ of the repository)")
    p.add_argument("--deadline-s", type=float, default=None,
                   help=f"global time limit in seconds (default {DEADLINE_S['gpu']:.0f} GPU, "
                        f"{DEADLINE_S['smoke']:.0f} smoke); parts not reached are recorded as skipped")
    p = sub.add_parser("part", help="(internal) run one part of a plan in its own process")
    p.add_argument("name", choices=list(PART_FUNCTIONS), help="the part to run")
    p.add_argument("--work", required=True, help="work folder holding plan.json and rows.jsonl")
    p.add_argument("--deadline", type=float, required=True, help="time.time() after which no new work starts")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stdout)
    if args.command == "part":
        run_part(args.work, args.name, args.deadline)
        return 0
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stopped from outside: the running part is ended too
    command = os.environ.get("DEVICE_RUN_COMMAND") or shlex.join([sys.executable, "-m", "rifelab.devicerun.cli",
                                                                  *(argv if argv is not None else sys.argv[1:])])
    path = run(args.out, "smoke" if args.smoke else "gpu", args.inputs, ROOT, command, args.deadline_s)
    print(f"device run archive: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
