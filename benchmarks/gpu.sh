#!/usr/bin/env bash
# The GPU checks, in one run on one GPU, most important first (about 7 minutes on an H200;
# each compiled benchmark spends about a minute compiling):
#   - the training step against the seed gon-pytorch==0.1.1, images/s and peak GPU memory of
#     each side: CUDA graphs (reduce-overhead), the same with TF32 matmuls, eager, default compile,
#     and the modulated block;
#   - the GPU tests (pytest -m gpu: fast paths against autograd on CUDA, CUDA-graph outputs kept);
#   - with SWEEP=1: 8 grid trials with the joblib launcher, n_jobs=4 against n_jobs=1.
# Usage: bash benchmarks/gpu.sh [OUT_DIR]      (needs gon-pytorch installed for the step benchmark)
set -uo pipefail
out=${1:-outputs/gpu}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$out/gpu.txt"
step() {
    echo "== benchmarks/step.py $*" | tee -a "$out/step.txt"
    local t0=$SECONDS
    "$py" benchmarks/step.py --device cuda "$@" 2>&1 | grep -v -i warn | tee -a "$out/step.txt"
    echo "   ($((SECONDS - t0)) s with compilation)" | tee -a "$out/step.txt"
}
step --mode reduce-overhead --steps 50
step --mode reduce-overhead --matmul-precision high --steps 50
step --mode eager --steps 30
"$py" -m pytest -q -m gpu tests/test_step.py 2>&1 | tail -n 15 | tee "$out/pytest_gpu.txt"
step --mode compile --steps 50
step --config modulated --mode reduce-overhead --steps 50
if [[ "${SWEEP:-0}" == 1 ]]; then
    "$py" benchmarks/sweep_parallel.py --steps "${SWEEP_STEPS:-600}" --out "$out/sweep" 2>&1 \
        | tail -n 40 | tee "$out/sweep.txt"
fi
