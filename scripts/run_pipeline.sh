#!/usr/bin/env bash
# Set up (rifelab, JupyterLab, DVC, papermill), then regenerate every result of this machine's device profile:
# `dvc repro -f` of all stages `*@<profile>` (cuda if torch sees a CUDA GPU, else mps on Apple GPUs, else cpu).
# RIFELAB_PROFILE=cpu|cuda|mps chooses the profile by hand. Other profiles' results are left as they are.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
PY=${PYTHON:-python3}
PROFILE=${RIFELAB_PROFILE:-$("$PY" -c "import torch; print('cuda' if torch.cuda.is_available() else 'mps' if torch.backends.mps.is_available() else 'cpu')")}
echo "rifelab: regenerating the $PROFILE profile (results/$PROFILE/)"
start=$(date +%s)
"$PY" -m dvc repro -f assets
"$PY" -m dvc repro -f --glob "*@$PROFILE" "$@"
echo "rifelab: $PROFILE profile regenerated in $(( $(date +%s) - start )) s; open results/$PROFILE/report.html"
