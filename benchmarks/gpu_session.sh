#!/bin/bash
# One GPU session (device tool, ~10 min): SVD-xt training benchmarks, then the tiny base
# model's pre-training on the same GPU. Run from the repo root with OUT set; needs the
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

W=/tmp/pretrain; M=/tmp/tiny-svd
P="$PY -m i2v_helpers.cli pretrain --work-dir $W --out $M --set device=${PRETRAIN_DEVICE:-cuda} --set vae_corpus_clips=${CORPUS:-800} --set corpus_clips=${CORPUS:-800}"
{ $P vae --vae-minutes ${VAE_MIN:-1.5} --set vae_batch_clips=32 --set vae_frames=4 --set vae_crop=64
  $P unet --unet-minutes ${UNET_MIN:-1.5} --set unet_batch=32
  $P decoder --decoder-minutes ${DEC_MIN:-0.35} --set vae_batch_clips=32
  $PY -c "from i2v_helpers.pretrain import PretrainConfig, finalize; finalize(PretrainConfig(work_dir='$W', out_dir='$M'))"
} 2>&1 | grep -v "Loading\|should be kept in float32\|CLIPImageProcessor" | tee "$OUT/pretrain.log"
cp $M/unet/diffusion_pytorch_model.safetensors "$OUT/unet.safetensors"
cp $M/vae/diffusion_pytorch_model.safetensors "$OUT/vae.safetensors"
tar czf "$OUT/rest.tgz" -C / tmp/tiny-svd/model_index.json tmp/tiny-svd/scheduler tmp/tiny-svd/feature_extractor \
  tmp/tiny-svd/image_encoder tmp/tiny-svd/unet/config.json tmp/tiny-svd/vae/config.json tmp/pretrain/vae_stats.json \
  tmp/pretrain/unet_stats.json tmp/pretrain/decoder_stats.json
ls -la "$OUT"
