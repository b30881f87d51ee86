#!/usr/bin/env bash
# Install rifelab and its tools into the current Python environment.
# torch first, pinned to a version already present as a CPU wheel on the project's machines: a plain `torch`
# requirement with no torch installed would pull the newest CUDA build (several GB). On a GPU machine install
# your CUDA build of torch first; `torch>=2.2` is satisfied and left alone.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c "import torch" 2>/dev/null; then
    "$PY" -m pip install -q "torch==2.13.0" || "$PY" -m pip install -q "torch>=2.2"
fi
"$PY" -m pip install -q -e ".[dev]"   # dev = the notebooks extra (JupyterLab, papermill, DVC, ...) + pytest
