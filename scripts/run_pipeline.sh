#!/usr/bin/env bash
# Set up and run the whole study pipeline on the bundled defaults (params.yaml): `dvc repro`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec dvc repro "$@"
