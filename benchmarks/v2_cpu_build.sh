#!/bin/bash
# The tiny SVD v2 base, built on a 2-core CPU over several sessions (issue: Tiny SVD v2 built on the CPU).
# Every step resumes: rerun the same line after an interruption. The work folder lives outside the
# checkout (V2_WORK, default /work/v2build) so that a fresh clone does not lose it.
#
#   bash benchmarks/v2_cpu_build.sh vae            # phase 1 until 31 dB on the probe clips (or 90 min); 8-frame
#                                                  # windows of 32 px crops (the first 44 min of this build: 4-frame)
#   bash benchmarks/v2_cpu_build.sh arm NAME       # one 15-minute UNet ablation arm, from scratch (names below)
#   bash benchmarks/v2_cpu_build.sh plot           # the learning curve PNG of the build and of each arm
#
# Each arm trains the UNet from random weights for 15 training minutes at a constant learning rate
# (warm-up 1 min), probes at 7.5 and 15 min (i2v_helpers.probe) and writes its curve to
# $V2_WORK/arms/NAME/curve.csv. Arms share the build's corpus, VAE and cached latents (symlinks).
# Run it in the background: nohup bash benchmarks/v2_cpu_build.sh arm base >> $V2_WORK/arms.log 2>&1 &
set -euo pipefail
cd "$(dirname "$0")/.."
W=${V2_WORK:-/work/v2build}
export PYTHONUNBUFFERED=1 TQDM_DISABLE=1 OMP_NUM_THREADS=2
COMMON=(--set corpus_clips=3000 --set workers=2 --set checkpoint_minutes=4)
case "${1:-}" in
  vae)
    i2v pretrain vae --work-dir "$W/work" --out "$W/tiny-svd" --vae-minutes 90 "${COMMON[@]}" \
      --set vae_target_db=31 --set vae_probe_minutes=5 --set vae_frames=8 --set vae_batch_clips=2
    ;;
  arm)
    name=${2:?arm name}
    case "$name" in
      base) extra=(--set probe_at_start=true) ;;                  # SVD's recipe: ln sigma ~ N(0.7, 1.6), EDM weight, 16 frames
      curriculum) extra=(--set unet_curriculum=4:0.6,16) ;;       # 4-frame clips (batch 16) for 60 %, then 16 frames
      hisigma) extra=(--set unet_p_mean=1.5) ;;                   # more steps at high sigma, where the probe loses objects
      sd3shift) extra=(--set unet_p_mean=-1.1) ;;                 # SD3's resolution shift: 36x fewer latent positions than SVD
      edm) extra=(--set unet_p_mean=-1.2 --set unet_p_std=1.2) ;; # EDM's image default, the control
      minsnr) extra=(--set unet_weighting=min_snr) ;;              # Min-SNR-5 instead of EDM's lambda(sigma)
      lr1e3) extra=(--set unet_lr=1e-3) ;;
      *) echo "unknown arm $name" >&2; exit 2 ;;
    esac
    A="$W/arms/$name"; mkdir -p "$A"
    for f in vae corpus.pt latents.pt; do [ -L "$A/$f" ] || [ -e "$A/$f" ] || ln -s "$W/work/$f" "$A/$f"; done
    i2v pretrain unet --work-dir "$A" --out "$A/tiny-svd" --unet-minutes 600 "${COMMON[@]}" \
      --set unet_decay_minutes=60 --set stop_after_minutes=15 --set probe_minutes=7.5 \
      --set probe_at_start=false "${extra[@]}"
    ;;
  plot)
    python benchmarks/plot_curve.py "$W/work/curve.csv" --out benchmarks/v2_learning_curve.png
    ;;
  *)
    sed -n 2,16p "$0"; exit 2 ;;
esac
