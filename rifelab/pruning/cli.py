"""`rifelab prune`: plan, prune and save RIFE's flow network once (the CLI layer of rifelab.pruning)."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from rifelab.pruning.apply import MODES, check_prunable, prune_model, save_pruned
from rifelab.pruning.plans import DEFAULT_PROTECTED, METHODS, make_plan, plan_lite
from rifelab.engines.cli import add_checkpoint_option
from rifelab.engines.spec import ModelSpec, load_checkpoint

log = logging.getLogger(__name__)

# ----------------------------------------------------------------------------- CLI


def add_prune_parser(subparsers: Any) -> argparse.ArgumentParser:
    """`rifelab prune`: prune the RIFE flow network once and save it as plan + state_dict."""
    p = subparsers.add_parser("prune", help="prune RIFE's flow network once and save it (plan + state_dict)",
                              description="Channel pruning of RIFE 4.x: plan (naive global, architecture-aware or "
                              "lite), prune, save; reload with rifelab.pruning.load_pruned(path), whose "
                              "interpolate(img0, img1, timestep, scale) is the unpruned model's. The pruning study's "
                              "fine-tuning stage is `python -m rifelab.studies.pruning --profile PROFILE`.")
    add_checkpoint_option(p)
    p.add_argument("--method", choices=METHODS + ("lite",), default="architecture_aware",
                   help="naive_global: one L1 threshold over all channels; architecture_aware: every unprotected "
                   "group loses --sparsity of its channels; lite: uniform width cut of every group (default: %(default)s)")
    p.add_argument("--mode", choices=MODES, default="physical",
                   help="physical: channels removed (smaller, faster); mask: weights zeroed (same shapes, same speed)")
    p.add_argument("--sparsity", type=float, required=True, help="fraction of prunable channels to remove, in [0, 1)")
    p.add_argument("--importance", choices=("l1", "group_norm"), default="l1",
                   help="channel importance for the lite cut (architecture_aware and naive_global use L1)")
    p.add_argument("--protect", nargs="*", default=list(DEFAULT_PROTECTED), metavar="PATTERN",
                   help="architecture_aware: layers kept whole (fnmatch patterns over conv names; default: %(default)s)")
    p.add_argument("--min-channels", type=int, default=16, help="architecture_aware: fewest channels a group keeps")
    p.add_argument("--round-to", type=int, default=8, help="kept channel counts are multiples of this (default: 8)")
    p.add_argument("--output", "-o", required=True, help="output file (.pt); reload with rifelab.pruning.load_pruned")
    p.set_defaults(func=cmd_prune_model)
    return p


def cmd_prune_model(args: argparse.Namespace) -> int:
    """Run `rifelab prune`: load, plan, prune, save (nothing is written when the request is refused)."""
    model = load_checkpoint(ModelSpec(checkpoint=args.checkpoint, device="cpu"))
    check_prunable(model)
    if args.method == "lite":
        plan = plan_lite(model.net, args.sparsity, round_to=args.round_to, importance=args.importance)
    elif args.method == "architecture_aware":
        plan = make_plan(model.net, args.method, args.sparsity, protected=args.protect,
                         min_channels=args.min_channels, round_to=args.round_to)
    else:
        plan = make_plan(model.net, args.method, args.sparsity)
    pruned = prune_model(model, plan, mode=args.mode)
    save_pruned(pruned, args.output, meta={"command": "rifelab prune", "method": args.method})
    print(f"saved {args.mode} {args.method} model at sparsity {args.sparsity} "
          f"({plan.removed_fraction:.1%} of prunable channels removed) to {args.output}")
    return 0
