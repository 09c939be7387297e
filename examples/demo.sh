#!/usr/bin/env bash
# The pipeline stage by stage, on a synthetic city with known ground truth:
# synth -> tile -> label -> caption (the simulated VLM panel) -> fuse (image check, refinement) -> pretrain
# (small model, CPU) -> embed -> probe. Runs offline in about 3 minutes on 2 cores. (`urbanln demo` runs the same
# chain from Python, with the ablations and baselines, and prints the table; it probes log(1 + target),
# this script the raw values, fitted and scored in their own units.)
# A 12 km city at 4 m a pixel, cut into 576 tiles of 500 m: the cell of the GDP and night-light rasters.
# Usage: examples/demo.sh [OUT_DIR]
set -euo pipefail
# one torch thread: a second one makes a step of this small model 1.6x faster on idle cores, but 10-20x slower when
# other work shares them (OMP_NUM_THREADS=2 on a machine of your own)
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
out=${1:-demo}
mkdir -p "$out"

urbanln synth city "$out/city" --size 3000 --gsd 4 --seed 0 --overwrite
urbanln tile "$out/city/imagery.tif" --size 125 -o "$out/tiles" --overwrite
urbanln label "$out/tiles" -o "$out/labels" --overwrite \
  --raster "population=$out/city/population.tif:sum" \
  --raster "carbon=$out/city/carbon.tif:sum" \
  --raster "gdp=$out/city/gdp.tif:sum" \
  --raster "nightlight=$out/city/nightlight.tif:sum" \
  --raster "landcover=$out/city/landcover.tif:fractions"
urbanln caption "$out/tiles" --models sim:precise,sim:verbose,sim:hallucinating,sim:generic -o "$out/captions" --overwrite
# disputed claims go back to the panel as yes/no questions; sim:precise, the most accurate persona, captions each
# quadrant and rewrites every model's caption with what it saw there
urbanln fuse "$out/captions" --tiles "$out/tiles" -o "$out/corpus" --check vlm --refine sim:precise --overwrite
urbanln pretrain --tiles "$out/tiles" --corpus "$out/corpus" -o "$out/run" --overwrite \
  --arch urbanln-small --pretrained none --epochs 13 --batch-size 64 --queue-size 512 --lr 1e-3 --warmup-steps 10 \
  --workers 0 --device cpu
urbanln embed --tiles "$out/tiles" --model "$out/run" -o "$out/embeddings.safetensors" --overwrite
urbanln probe --target population,carbon,gdp,nightlight --embeddings "$out/embeddings.safetensors" --labels "$out/labels" \
  --split spatial --block-km 1 --log-target no -o "$out/probe" --overwrite

echo "artifacts:" >&2
for a in city tiles labels captions corpus run embeddings.safetensors probe; do echo "  $out/$a" >&2; done
