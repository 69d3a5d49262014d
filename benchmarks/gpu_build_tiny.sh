#!/bin/bash
# Rebuild the tiny SVD base (v2) on one GPU in about 9 minutes, and measure the pre-training
# recipe's throughput against v1's on the same GPU. Run from the repo root:
#   OUT=/some/dir bash benchmarks/gpu_build_tiny.sh
# Needs the diffusers and scikit-video wheels in .whl/ where they are not installed (the
# device machine has torch, transformers and OpenCV; PyAV is not needed: video_io falls back
# to OpenCV). Writes to $OUT: gpu.txt (machine), throughput.jsonl, pretrain.log, the model
# (unet.safetensors, vae.safetensors and rest.tgz: the folder data_samples/models/tiny-svd)
# and the phases' state (work.tgz).
# Minutes per phase: VAE_MIN, UNET_MIN, DEC_MIN; corpus size: CORPUS; DRY=1 for a CPU dry run.
# Back on the CPU machine, with the files in F (the device tool's files_at):
#   rm -rf runs/gpu && mkdir -p runs/gpu/work && tar xzf F/rest.tgz -C runs/gpu && tar xzf F/work.tgz -C runs/gpu/work
#   cp F/unet.safetensors runs/gpu/tiny-svd/unet/diffusion_pytorch_model.safetensors
#   cp F/vae.safetensors runs/gpu/tiny-svd/vae/diffusion_pytorch_model.safetensors
#   i2v pretrain evaluate --work-dir runs/gpu/work --out runs/gpu/tiny-svd --card   # the model card's metrics
# and ship runs/gpu/tiny-svd as data_samples/models/tiny-svd only if it beats the shipped one.
set -u
OUT=${OUT:-/tmp/gpu-out}; mkdir -p "$OUT"; PY=${PY:-python3}
if ls .whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONUNBUFFERED=1 TQDM_DISABLE=1
DEV=cuda; [ "${DRY:-0}" = 1 ] && DEV=cpu
W=${WORK:-/tmp/pretrain}; M=/tmp/tiny-svd
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 || true
  nproc; $PY -c "import torch,diffusers,transformers;print('torch',torch.__version__,'diffusers',diffusers.__version__,'transformers',transformers.__version__)"
  date -u; } > "$OUT/gpu.txt" 2>&1
cat "$OUT/gpu.txt"
I2V="$PY -m i2v_helpers.cli"
# throughput of the UNet phase's step: the v1 recipe (8x8 latents, batch 32, fp32) vs v2's
for args in "model=v1 --set unet_batch=32 --set precision=fp32" "model=v2 --set unet_batch=${BATCH:-128}"; do
  timeout 60 $I2V pretrain throughput --seconds ${PROBE_S:-8} --set device=$DEV --set $args 2>&1 | grep '^{' | tee -a "$OUT/throughput.jsonl"
done
timeout ${BUILD_TIMEOUT:-520} $I2V pretrain all --no-eval --work-dir $W --out $M \
  --vae-minutes ${VAE_MIN:-1.8} --unet-minutes ${UNET_MIN:-4.0} --decoder-minutes ${DEC_MIN:-0.5} \
  --set device=$DEV --set corpus_clips=${CORPUS:-12000} --set workers=${WORKERS:-14} --set checkpoint_minutes=1 \
  --set vae_batch_clips=32 --set vae_frames=8 --set vae_crop=0 --set vae_temporal_weight=0.5 \
  --set unet_batch=${BATCH:-128} --set unet_lr=${UNET_LR:-5e-4} --set decoder_batch_clips=8 2>&1 \
  | grep --line-buffered -v "Loading\|should be kept in float32\|CLIPImageProcessor\|Writing model" | tee "$OUT/pretrain.log"
[ -f $M/model_index.json ] || $I2V pretrain finalize --work-dir $W --out $M 2>&1 | tail -2  # cut short: what was checkpointed
cp $M/unet/diffusion_pytorch_model.safetensors "$OUT/unet.safetensors"
cp $M/vae/diffusion_pytorch_model.safetensors "$OUT/vae.safetensors"
tar czf "$OUT/rest.tgz" -C /tmp --exclude='diffusion_pytorch_model.safetensors' tiny-svd
tar czf "$OUT/work.tgz" -C "$W" --exclude='*.safetensors' --exclude='*.pt' .
ls -la "$OUT"
