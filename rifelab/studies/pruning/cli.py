"""`python -m rifelab.studies.pruning`: the CLI of the finetune stage."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from rifelab.publish.notebooks import parse_set
from rifelab.publish.results import PROFILES
from rifelab.studies.pruning.finetune import finetune

def main(argv: Sequence[str] | None = None) -> int:
    """`python -m rifelab.studies.pruning`: the finetune@PROFILE stage (plans + distillation, resumable)."""
    parser = argparse.ArgumentParser(
        prog="python -m rifelab.studies.pruning",
        description="The finetune@PROFILE stage of the pruning study: measure each group's sensitivity and latency "
        "savings, build the plans named in pruning.finetune, fine-tune each by distillation and save it under "
        "<results root>/<profile>/finetune/. Up-to-date checkpoints are kept; interrupted ones resume.")
    parser.add_argument("--profile", default="cpu", choices=list(PROFILES),
                        help="device profile whose params file and result folder are used (default: cpu)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override one key of the pruning section for this run (VALUE as YAML), may repeat")
    parser.add_argument("--results-root", default=None, metavar="DIR",
                        help="write under DIR/<profile>/finetune (the pipeline passes results, the committed "
                        "results; default: the scratch folder scratch/, ignored by git)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        df = finetune(args.profile, parse_set(args.set), args.results_root)
    except ValueError as exc:
        print(f"finetune: error: {exc}", file=sys.stderr)
        return 2
    for r in df.itertuples():
        print(f"{r.config:40s} {r.status:20s} {r.file}")
    return 0
