"""Indicator rasters caused by the scene: population, carbon, GDP and night light.

Every value starts on an object (a building or a road) as a documented formula
times a noise factor drawn for that object, and both the value and its factor
are stored in scene.json. A raster cell holds the sum of the values of the
objects whose centre (buildings) or whose pieces (roads) fall in it, so each
raster's total is exactly the sum over the scene's objects. Night light is then
blurred and rescaled to keep its total.
"""

from __future__ import annotations

import math

import numpy as np

from urbanln_cli.synth import geometry as geo
from urbanln_cli.synth.scene import USES, ZONES, Scene

# people per m² of residential floor area, by zone (about 1 person per 26–45 m²)
OCCUPANCY = {
    "centre": 1 / 26,
    "residential_high": 1 / 28,
    "residential_mid": 1 / 32,
    "residential_low": 1 / 45,
    "industrial": 1 / 30,  # worker dormitories
    "park": 1 / 40,
    "village": 1 / 38,
    "farmland": 1 / 40,
}
CARBON_PER_M2 = {"residential": 0.0, "commercial": 0.09, "industrial": 0.24}  # t CO2 per m² floor per year
TRAFFIC_CARBON_PER_LANE_M = {"highway": 0.9, "arterial": 0.45, "local": 0.0}  # t CO2 per lane-metre per year
GDP_PER_M2 = {"residential": 0.0, "commercial": 2600.0, "industrial": 700.0}  # USD per m² floor per year
LIGHT_PER_M2 = {"residential": 0.5, "commercial": 1.2, "industrial": 0.8}  # radiance units per m² of roof
ROAD_LIGHT_PER_M2 = {"highway": 1.0, "arterial": 0.9, "local": 0.35}  # radiance units per m² of road
NOISE_SIGMA = 0.25  # log-normal, mean 1
GRIDS_M = {"population": 100.0, "carbon": 1000.0, "gdp": 500.0, "nightlight": 500.0}
NIGHTLIGHT_BLUR_M = 600.0  # Gaussian sigma of the night-light blur, metres
ROAD_PIECE_M = 20.0  # roads are spread over cells in pieces this long
NAMES = ("population", "carbon", "gdp", "nightlight")


def formulas() -> dict:
    """The formulas and constants, as recorded in scene.json."""
    return {
        "noise": f"each object's value is multiplied by its own noise factor exp({NOISE_SIGMA}*z - "
        f"{NOISE_SIGMA}**2/2), z ~ N(0,1) (mean 1), stored in its 'noise'",
        "floor_area_m2": "footprint_m2 * storeys, storeys = max(1, round(height_m / storey_m)), storey_m = 3 "
        "residential, 4 commercial, 6 industrial",
        "population": {
            "expr": "building: floor_area_m2 * occupancy[zone] * noise.population if use == 'residential' else 0",
            "occupancy_per_m2": OCCUPANCY,
            "cell_m": GRIDS_M["population"],
            "unit": "people per cell",
        },
        "carbon": {
            "expr": "building: floor_area_m2 * carbon_per_m2[use] * noise.carbon; road: length_m * lanes * "
            "traffic_per_lane_m[class] * noise.carbon",
            "carbon_per_m2": CARBON_PER_M2,
            "traffic_per_lane_m": TRAFFIC_CARBON_PER_LANE_M,
            "cell_m": GRIDS_M["carbon"],
            "unit": "t CO2 per year per cell",
        },
        "gdp": {
            "expr": "building: floor_area_m2 * gdp_per_m2[use] * noise.gdp",
            "gdp_per_m2": GDP_PER_M2,
            "cell_m": GRIDS_M["gdp"],
            "unit": "USD per year per cell",
        },
        "nightlight": {
            "expr": "building: footprint_m2 * light_per_m2[use] * noise.nightlight; road: length_m * width_m * "
            "road_light_per_m2[class] * noise.nightlight; then a Gaussian blur, rescaled to keep the total",
            "light_per_m2": LIGHT_PER_M2,
            "road_light_per_m2": ROAD_LIGHT_PER_M2,
            "blur_sigma_m": NIGHTLIGHT_BLUR_M,
            "cell_m": GRIDS_M["nightlight"],
            "unit": "radiance units per cell",
        },
        "cells": "a building counts in the cell holding its footprint's centre; a road is cut into pieces of at most "
        f"{ROAD_PIECE_M:g} m, each counted in the cell holding its midpoint, in proportion to its length",
    }


def _noise(rng: np.random.Generator, n: int) -> np.ndarray:
    return np.round(np.exp(NOISE_SIGMA * rng.standard_normal(n) - NOISE_SIGMA**2 / 2), 4)


def attach(scene: Scene) -> None:
    """Compute every object's indicator values and noise factors, in place."""
    rng = np.random.default_rng([scene.seed, 3])
    b = scene.buildings
    n = len(b["cx"])
    b["footprint_m2"] = np.round(b["length"] * b["depth"], 2)
    b["floor_area_m2"] = np.round(b["footprint_m2"] * b["storeys"], 2)
    use = np.array(USES)[b["use"]] if n else np.array([], dtype=str)
    zone = np.array(ZONES)[b["zone"]] if n else np.array([], dtype=str)
    for name in NAMES:
        b[f"noise_{name}"] = _noise(rng, n)
    occupancy = np.array([OCCUPANCY[z] for z in zone]) * (use == "residential")
    b["population"] = np.round(b["floor_area_m2"] * occupancy * b["noise_population"], 3)
    b["carbon"] = np.round(b["floor_area_m2"] * np.array([CARBON_PER_M2[u] for u in use]) * b["noise_carbon"], 3)
    b["gdp"] = np.round(b["floor_area_m2"] * np.array([GDP_PER_M2[u] for u in use]) * b["noise_gdp"], 1)
    b["nightlight"] = np.round(b["footprint_m2"] * np.array([LIGHT_PER_M2[u] for u in use]) * b["noise_nightlight"], 3)
    for road in scene.roads:
        noise = _noise(rng, 2)
        road["length_m"] = round(geo.polyline_length(road["line"]), 2)
        road["carbon"] = round(
            road["length_m"] * road["lanes"] * TRAFFIC_CARBON_PER_LANE_M[road["class"]] * float(noise[0]), 3
        )
        road["nightlight"] = round(
            road["length_m"] * road["width_m"] * ROAD_LIGHT_PER_M2[road["class"]] * float(noise[1]), 3
        )
        road["noise"] = {"carbon": float(noise[0]), "nightlight": float(noise[1])}


def grid_shape(scene: Scene, cell: float) -> tuple[int, int]:
    n = int(math.ceil(scene.extent / cell - 1e-9))
    return n, n


def rasters(scene: Scene) -> dict[str, np.ndarray]:
    """The four indicator grids (float64), each summing exactly to its objects' values."""
    from scipy.ndimage import gaussian_filter

    b = scene.buildings
    road_pieces = []
    for road in scene.roads:
        mids, lengths = geo.resample_polyline(road["line"], ROAD_PIECE_M)
        share = lengths / lengths.sum() if len(lengths) else lengths
        road_pieces.append((mids, share, road))
    out = {}
    for name in NAMES:
        cell = GRIDS_M[name]
        shape = grid_shape(scene, cell)
        grid = np.zeros(shape, np.float64)
        if len(b["cx"]):
            rows = np.clip((b["cy"] // cell).astype(np.int64), 0, shape[0] - 1)
            cols = np.clip((b["cx"] // cell).astype(np.int64), 0, shape[1] - 1)
            np.add.at(grid, (rows, cols), b[name])
        if name in ("carbon", "nightlight"):
            for mids, share, road in road_pieces:
                value = road[name]
                if not value or not len(mids):
                    continue
                # road ends may stick out past the image: their pieces count in the edge cells
                rows = np.clip((mids[:, 1] // cell).astype(np.int64), 0, shape[0] - 1)
                cols = np.clip((mids[:, 0] // cell).astype(np.int64), 0, shape[1] - 1)
                np.add.at(grid, (rows, cols), value * share)
        if name == "nightlight":
            total = grid.sum()
            grid = gaussian_filter(grid, sigma=NIGHTLIGHT_BLUR_M / cell, mode="reflect")
            if grid.sum() > 0:
                grid *= total / grid.sum()
        out[name] = grid
    return out


def totals(scene: Scene) -> dict[str, float]:
    """Each indicator's total straight from the objects: what every raster must sum to."""
    b = scene.buildings
    result = {name: float(np.sum(b[name])) for name in NAMES}
    for road in scene.roads:
        result["carbon"] += road["carbon"]
        result["nightlight"] += road["nightlight"]
    return result
