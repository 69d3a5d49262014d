#!/bin/bash
# The downstream re-fit on the shipped v2 base (benchmarks/RESULTS.md, "Re-fit downstream on the shipped v2 base"):
# stage 1 (tiny-stage1, 400 steps) with the demo's settings, then three stage-2 LoRA variants of 400 steps on it,
# scored together on the 16 held-out basketball clips x 2 seeds. About 40 minutes on 2 idle cores; reruns skip
# the runs already there. Work folder: REFIT_WORK (default /work/v2build/refit, outside the checkout).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v i2v >/dev/null || . .venv/bin/activate
export OMP_NUM_THREADS=2 TQDM_DISABLE=1 PYTHONUNBUFFERED=1
R=${REFIT_WORK:-/work/v2build/refit}
mkdir -p "$R"
C=(--set checkpoint_every=0 --set report_to=none --set "val_images=[]")  # as i2v demo trains
[ -f "$R/stage1/pipeline/model_index.json" ] || i2v train tiny-stage1 "${C[@]}" --set output_dir="$R/stage1"
for v in "a learning_rate=3e-4" "b learning_rate=1e-4" "c lora_blocks=temporal"; do
  read -r name setting <<< "$v"
  [ -f "$R/s2$name/adapter/adapter_model.safetensors" ] || i2v train tiny-stage2-sports "${C[@]}" \
    --set init_from="$R/stage1" --set max_steps=400 --set output_dir="$R/s2$name" --set "$setting"
done
i2v eval --manifest data_samples/sports/val.jsonl --max-clips 16 --out "$R/eval_sports" --compare baseline \
  stage1="$R/stage1" s2a="$R/stage1+lora:$R/s2a/adapter" s2b="$R/stage1+lora:$R/s2b/adapter" \
  s2c="$R/stage1+lora:$R/s2c/adapter"
