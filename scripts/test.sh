#!/usr/bin/env bash
# Set up and run the test suite (unit tests + smoke runs of every notebook with tiny parameters).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
PY=${PYTHON:-python3}
"$PY" -m rifelab.cli fetch
exec "$PY" -m pytest -q -p no:cacheprovider "$@"
