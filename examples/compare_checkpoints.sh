#!/usr/bin/env bash
# Probe several trained runs and baselines side by side in one table.
# Usage: examples/compare_checkpoints.sh runs/A runs/B ...
set -euo pipefail
args=()
for run in "$@"; do
  name=$(basename "$run")
  urbanln embed --model "$run" -o "emb_$name.safetensors" --overwrite
  args+=(--embeddings "emb_$name.safetensors")
done
urbanln embed --baseline pixels -o emb_pixels.safetensors --overwrite
urbanln embed --baseline random --model "$1" -o emb_random.safetensors --overwrite
urbanln probe --target all --split spatial "${args[@]}" \
  --embeddings emb_pixels.safetensors --embeddings emb_random.safetensors -o probe/compare --overwrite
