#!/usr/bin/env bash
# The README's side-by-side table: the 10m trained with each prompt front-end at one budget
# (same corpus, recipe, steps and seed), then scored by eval.run on the bundled eval set.
#
#   scripts/compare_frontends.sh [STEPS] [CROP_UNTIL]     # default 600 steps, the first 300 onset-cropped
#
# Needs data/corpus (python -m s2s.data.corpus --out data/corpus --pairs 3000 --seed 0). Writes
# ckpts/compare/<front-end>/ and reports/compare/ (report.md, summary.csv, groups.csv per split).
set -euo pipefail
cd "$(dirname "$0")/.."
steps=${1:-600}
crop_until=${2:-300}
for frontend in codes whisper_tiny_en whisper_tiny_en+codes; do
    python -m s2s.training.train --preset 10m --frontend "$frontend" --data data/corpus/manifest.jsonl \
        --codec world_vq --out "ckpts/compare/${frontend/+/_}" --steps "$steps" --crop-frames 24 \
        --crop-until "$crop_until" --batch-frames 4000 --lr 1e-3 --warmup 100 --dropout 0.1 \
        --stretch 0.1 --mask-spans 2 --onset-weight 4 --onset-steps 16 --eval-every "$steps" \
        --save-every "$steps" --check-every 0 --threads 2
done
python -m eval.run --checkpoints ckpts/compare --no-ceiling --out reports/compare --threads 2
