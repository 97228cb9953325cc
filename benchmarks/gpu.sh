#!/usr/bin/env bash
# The GPU checks in one run on one GPU (about 8 minutes on an H200), written to
# benchmarks/results/h200.json: the training step against the seed gon-pytorch==0.1.1 per config
# (eager, CUDA graphs in float32 and TF32: keys eager_ratio, compiled_fp32_ratio,
# compiled_tf32_ratio; ratio = seed ms / ours ms), the GPU tests (pytest -m gpu), and the sweep
# benchmark (8 grid trials at the default steps, trials_per_gpu 1, 4 and 8: trials per hour).
#
# Usage: bash benchmarks/gpu.sh [--device cuda|cpu] [--wheels DIR] [--out DIR]
#   --wheels DIR  a bare machine, a python ($PYTHON, default python3) with only torch: install
#                 this repo with its app packages, pytest and the seed into it from DIR alone.
#                 Make DIR where there is a network, with the GPU machine's Python version:
#                   pip download --dest wheels ".[app]" gon-pytorch==0.1.1 pytest "setuptools>=64"
#   --device cpu  the dry run: tiny sizes on the CPU, to try the script end to end; writes
#                 benchmarks/results/cpu-dry.json
set -euo pipefail
device=cuda wheels="" out=outputs/gpu
while [[ $# -gt 0 ]]; do
    case $1 in
        --device) device=$2; shift 2 ;;
        --wheels) wheels=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        *) echo "usage: bash benchmarks/gpu.sh [--device cuda|cpu] [--wheels DIR] [--out DIR]" >&2
           exit 2 ;;
    esac
done
cd "$(dirname "$0")/.."
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
export WANDB_MODE=offline WANDB_SILENT=true
py=${PYTHON:-python3}
if [[ -n $wheels ]]; then  # into $py's environment (a fresh venv with torch): no index
    "$py" -m pip install -q --no-index --find-links "$wheels" ".[app]" pytest gon-pytorch==0.1.1
fi
"$py" -c "import torch, gon_pytorch; print('torch', torch.__version__)" | tee "$out/env.txt"
if [[ $device == cuda ]]; then
    nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee -a "$out/env.txt"
    result=benchmarks/results/h200.json eager_cfgs="seed modulated digits overhead"
    graph_cfgs="seed modulated digits" tf32_cfgs="seed digits" graph=reduce-overhead
    run=(--steps 40 --rounds 1) sweep=(--per-gpu 1 4 8 --trials 8)
else  # dry: the smallest config, a few steps, a two-trial sweep of 5 steps
    result=benchmarks/results/cpu-dry.json eager_cfgs=overhead graph_cfgs=overhead
    tf32_cfgs=overhead graph=compile run=(--steps 3 --rounds 1 --warmup 1)
    sweep=(--per-gpu 1 2 --trials 2 --steps 5 train.compile=false)
fi
steps_json=$out/step.json
rm -f "$steps_json"
step() {  # one benchmarks/step.py line, into $steps_json
    echo "== benchmarks/step.py $*" | tee -a "$out/step.txt"
    "$py" benchmarks/step.py --device "$device" "${run[@]}" --json "$steps_json" "$@" 2>&1 \
        | grep -v -i warn | tee -a "$out/step.txt"
}
for c in $eager_cfgs; do step --config "$c" --mode eager; done
for c in $graph_cfgs; do step --config "$c" --mode "$graph"; done
for c in $tf32_cfgs; do step --config "$c" --mode "$graph" --matmul-precision high; done
set +e
"$py" -m pytest -q -m gpu tests/test_step.py 2>&1 | tail -n 5 | tee "$out/pytest_gpu.txt"
"$py" benchmarks/sweep_parallel.py --device "$device" --out "$out/sweep" "${sweep[@]}" \
    | tee "$out/sweep.txt"
sweep_rc=${PIPESTATUS[0]}
set -e
"$py" - "$steps_json" "$out/sweep/sweep_parallel.json" "$out/pytest_gpu.txt" "$result" \
    "$graph" "$sweep_rc" "$device" <<'EOF'
import json, sys
steps, sweep, pytest_txt, result, graph, sweep_rc, device = sys.argv[1:]
rows = json.load(open(steps))["rows"]
configs = {}
for r in rows:
    key = {"eager": "eager_ratio"}.get(r["mode"]) or (
        "compiled_tf32_ratio" if r["matmul_precision"] == "high" else "compiled_fp32_ratio")
    configs.setdefault(r["config"], {})[key] = r["ratio"]
    configs[r["config"]][key.replace("ratio", "ours_ms")] = r["ours_ms_per_step"]
out = {"title": f"GPU checks (benchmarks/gpu.sh, {rows[0]['device']})",
       "command": f"bash benchmarks/gpu.sh --device {device}",
       "note": f"ratio: seed ms / ours ms per step (> 1: ours faster); compiled: {graph}",
       "torch": rows[0]["torch"], "configs": configs,
       "pytest_gpu": open(pytest_txt).read().strip().splitlines()[-1:],
       "sweep": json.load(open(sweep)), "sweep_ok": sweep_rc == "0"}
open(result, "w").write(json.dumps(out, indent=1) + "\n")
print("wrote", result)
EOF
