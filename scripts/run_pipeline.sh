#!/usr/bin/env bash
# Set up and run the whole study pipeline on the bundled defaults (params.yaml): `dvc repro`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
PY=${PYTHON:-python3}
"$PY" -m ipykernel install --user --name python3 >/dev/null 2>&1 || true
exec dvc repro "$@"
