#!/usr/bin/env bash
# The GPU checks, in one run on one GPU (about 6 minutes on an H200):
#   - the training step against the seed gon-pytorch==0.1.1 (compiled, eager, modulated block),
#     with images/s and peak GPU memory of each side;
#   - 8 grid trials with the joblib launcher, n_jobs=4 against n_jobs=1 (wall-time ratio).
# Usage: bash benchmarks/gpu.sh [OUT_DIR]      (needs gon-pytorch installed for the step benchmark)
set -uo pipefail
out=${1:-outputs/gpu}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$out/gpu.txt"
step() {
    echo "== benchmarks/step.py $*" | tee -a "$out/step.txt"
    python benchmarks/step.py --device cuda "$@" 2>&1 | grep -v -i warn | tee -a "$out/step.txt"
}
step --mode compile --steps 30
python benchmarks/sweep_parallel.py --steps "${SWEEP_STEPS:-600}" --out "$out/sweep" 2>&1 \
    | tail -n 40 | tee "$out/sweep.txt"
step --mode eager --steps 30
step --config modulated --mode compile --steps 30
