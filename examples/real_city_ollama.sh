#!/usr/bin/env bash
# A real city end to end with local VLMs through Ollama.
# Needs: a GeoTIFF of the city, indicator rasters (e.g. WorldPop population, ODIAC carbon,
# VIIRS night light, a land-cover map), and an Ollama server with two vision models pulled:
#   ollama pull llava:7b && ollama pull qwen2.5vl:7b
# Usage: examples/real_city_ollama.sh CITY.tif POP.tif CARBON.tif LIGHT.tif [OUT_DIR]
set -euo pipefail
abs() { case $1 in /*) echo "$1" ;; *) echo "$PWD/$1" ;; esac; }   # inputs stay valid after the cd below
city=$(abs "$1") pop=$(abs "$2") carbon=$(abs "$3") light=$(abs "$4") out=${5:-city_run}
mkdir -p "$out"; cd "$out"

urbanln env                                                   # is Ollama up, which models, which GPU
urbanln tile "$city" --size 256                               # -> tiles/
urbanln label --raster "population=$pop:sum" --raster "carbon=$carbon:sum" --raster "nightlight=$light:mean"   # -> labels/
urbanln caption --models llava,qwen-vl                        # -> captions/  (resumable: rerun after Ctrl-C)
# -> corpus/: each model's claims checked by the other model (yes/no), then rewritten from quadrant captions
urbanln fuse --check vlm --refine qwen-vl
urbanln pretrain --arch ViT-B-16 --pretrained openai --epochs 20 --batch-size 64   # -> runs/<time>/, runs/latest
urbanln embed                                                 # -> embeddings.safetensors (from runs/latest)
urbanln embed --baseline pixels -o pixels.safetensors
urbanln probe --target all --split spatial --block-km 1 \
  --embeddings embeddings.safetensors --embeddings pixels.safetensors   # -> probe/all/ (report, maps)
