#!/usr/bin/env bash
# The GPU run of the cuda profile (README, "GPU run"): one command on a lent H100/H200, from the working tree, with
# that machine's own Python (no installs, no PyAV, no DVC). Writes ONE archive, OUT/device_run.tar.gz.
#   bash scripts/device_run.sh --prepare      here, once before: real frame pairs (PNG), the fast-path weights and the
#                                             commit into .device_inputs/ (carried), and a check that the call fits;
#                                             if not, the largest committed results/ files, only those unmodified
#                                             since HEAD, leave the working tree (recorded; git holds them)
#   bash scripts/device_run.sh --restore      here, after: puts them back (git checkout HEAD -- PATHS)
#   bash scripts/device_run.sh OUT            there: measure under a 450 s deadline (hard limit 470 s), archive
#   bash scripts/device_run.sh --smoke OUT    any CPU, < 2 min: tiny resolution, two configurations, layout checked
# Then here: rifelab device-report OUT/device_run.tar.gz  (restores first, lands it in results/cuda/, renders 05).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export DEVICE_RUN_COMMAND="bash scripts/device_run.sh $*"
usage="usage: bash scripts/device_run.sh OUT | --smoke OUT | --prepare [rifelab device-prepare options] | --restore"
case "${1:-}" in
  --prepare)
    shift
    exec "$PY" -m rifelab.cli device-prepare "$@" ;;
  --restore)
    exec "$PY" -m rifelab.cli device-restore ;;
  --smoke)
    out=${2:?$usage}
    inputs=.device_inputs
    if [ ! -f "$inputs/inputs.json" ]; then  # CI: prepare two pairs into a temporary folder (needs PyAV here)
      inputs=$(mktemp -d)
      trap 'rm -rf "$inputs"' EXIT
      "$PY" -m rifelab.cli device-prepare --dest "$inputs" --pairs 2 --no-size-check
    fi
    timeout 100 "$PY" -m rifelab.devicerun.cli run "$out" --smoke --inputs "$inputs" ;;
  ""|-*)
    echo "$usage" >&2
    exit 2 ;;
  *)
    exec timeout 470 "$PY" -m rifelab.devicerun.cli run "$1" ;;
esac
