#!/usr/bin/env bash
# The pipeline stage by stage, on a synthetic city with known ground truth:
# synth -> tile -> label -> caption (the simulated VLM panel) -> fuse -> pretrain (tiny model, CPU)
# -> embed -> probe. Runs offline in a few minutes on 2 cores. (`urbanln demo` runs the same
# chain from Python, with the ablations, and prints the table.)
# Usage: examples/demo.sh [OUT_DIR]
set -euo pipefail
out=${1:-demo}
mkdir -p "$out"

urbanln synth city "$out/city" --size 2048 --seed 0 --overwrite
urbanln tile "$out/city/imagery.tif" --size 128 -o "$out/tiles" --overwrite
urbanln label "$out/tiles" -o "$out/labels" --overwrite \
  --raster "population=$out/city/population.tif:sum" \
  --raster "carbon=$out/city/carbon.tif:sum" \
  --raster "gdp=$out/city/gdp.tif:sum" \
  --raster "nightlight=$out/city/nightlight.tif:sum" \
  --raster "landcover=$out/city/landcover.tif:fractions"
urbanln caption "$out/tiles" --models sim:precise,sim:verbose,sim:hallucinating,sim:generic -o "$out/captions" --overwrite
urbanln fuse "$out/captions" --tiles "$out/tiles" -o "$out/corpus" --overwrite
urbanln pretrain --tiles "$out/tiles" --corpus "$out/corpus" -o "$out/run" --overwrite \
  --arch urbanln-tiny --pretrained none --epochs 4 --batch-size 32 --queue-size 256 --lr 5e-4 --warmup-steps 4 --device cpu
urbanln embed --tiles "$out/tiles" --model "$out/run" -o "$out/embeddings.safetensors" --overwrite
urbanln probe --target population,gdp,nightlight --embeddings "$out/embeddings.safetensors" --labels "$out/labels" \
  --split spatial --block-km 0.5 -o "$out/probe" --overwrite

echo "artifacts:" >&2
for a in city tiles labels captions corpus run embeddings.safetensors probe; do echo "  $out/$a" >&2; done
