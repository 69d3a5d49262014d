#!/bin/bash
# One GPU session (device tool, ~5 min): SVD-xt training benchmarks. Run from the repo root with OUT set; needs the
# diffusers wheel in .whl/ (the GPU image has torch, transformers, peft, accelerate).
set -u
OUT=${OUT:-/tmp/gpu-out}; mkdir -p "$OUT"; PY=${PY:-python3}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 TQDM_DISABLE=1
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  $PY -c "import torch,diffusers,peft,transformers,accelerate;print('torch',torch.__version__,'diffusers',diffusers.__version__,'peft',peft.__version__,'transformers',transformers.__version__,'accelerate',accelerate.__version__)"
  date -u; } > "$OUT/gpu.txt" 2>&1
cat "$OUT/gpu.txt"

timeout ${BENCH_TIMEOUT:-240} $PY benchmarks/gpu_svd_xt.py "$OUT/bench.jsonl" --budget-s ${BENCH_BUDGET:-170} ${BENCH_ARGS:-} 2>&1 \
  | grep -v "Loading\|should be kept in float32\|CLIPImageProcessor" | tee "$OUT/bench.log"

# The tiny base model is built by benchmarks/gpu_build_tiny.sh (its own session).
ls -la "$OUT"
