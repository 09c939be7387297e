"""The vector city: zones, roads, rail, water, parks, buildings, trees and vehicles.

The scene is generated whole before anything is drawn. Districts are the
Voronoi cells of jittered seed points; each gets a zone from its distance to
the centre (bent by a smooth random field), its own street-grid orientation and
block size, and is filled block by block with the building pattern of its zone.
Major roads (rings and spokes, a grid, or a linear spine, by ``style``), the
river, a lake and a rail line cut through districts, and everything that would
sit on them is dropped. Geometry lives in local metres (see ``geometry``) until
``write_scene_json`` converts it to the CRS.

Roof colour and material are drawn from one distribution for every building,
independently of use and zone, so colour alone says nothing about land use.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np

from urbanln_cli.synth.layout_blocks import _BlockLayout, _shrink
from urbanln_cli.synth.layout_districts import _Builder
from urbanln_cli.synth.scene_model import (
    CLASSES,
    CROPS,
    ROAD_CLASSES,
    ROOF_COLOUR_P,
    ROOF_COLOURS,
    ROOF_MATERIAL_P,
    ROOF_MATERIALS,
    SETBACK_M,
    STOREY_M,
    STYLES,
    SUN_AZIMUTH_DEG,
    SUN_ELEVATION_DEG,
    USE_CLASS,
    USES,
    VEHICLE_KINDS,
    VEHICLE_SIZE,
    ZONE_LAYOUT,
    ZONES,
    Scene,
    Z,
)

__all__ = [
    "CLASSES",
    "CROPS",
    "ROAD_CLASSES",
    "ROOF_COLOURS",
    "ROOF_COLOUR_P",
    "ROOF_MATERIALS",
    "ROOF_MATERIAL_P",
    "SETBACK_M",
    "STOREY_M",
    "STYLES",
    "SUN_AZIMUTH_DEG",
    "SUN_ELEVATION_DEG",
    "Scene",
    "USES",
    "USE_CLASS",
    "VEHICLE_KINDS",
    "VEHICLE_SIZE",
    "Z",
    "ZONES",
    "ZONE_LAYOUT",
    "_BlockLayout",
    "_Builder",
    "_shrink",
    "generate",
    "place",
    "write_scene_json",
]

# ---------------------------------------------------------------- placement


def place(size: int, gsd: float, seed: int) -> tuple[str, tuple[float, float], tuple[float, float]]:
    """A UTM zone-50N origin for the image near Beijing, moved by the seed; (crs, origin, lon/lat)."""
    from rasterio.warp import transform

    rng = np.random.default_rng([seed, 7])
    lon, lat = 116.4 + rng.uniform(-0.8, 0.8), 39.9 + rng.uniform(-0.6, 0.6)
    crs = "EPSG:32650"
    xs, ys = transform("EPSG:4326", crs, [lon], [lat])
    half = size * gsd / 2
    # whole metres, so every coarse grid lines up with the imagery exactly
    return crs, (float(round(xs[0] - half)), float(round(ys[0] + half))), (lon, lat)


def generate(size: int, gsd: float, seed: int, style: str, progress: Callable[[str], None] | None = None) -> Scene:
    """Build the whole vector scene; deterministic for (size, gsd, seed, style)."""
    say = progress or (lambda text: None)
    crs, origin, lonlat = place(size, gsd, seed)
    b = _Builder(size, gsd, seed, style)
    b.river()
    b.lake()
    b.railway()
    b.major_roads()
    b.districts(say)
    vehicles = b.traffic()
    rng = np.random.default_rng([seed, STYLES.index(style), 2])

    def cat(key, dtype=np.float64):
        parts = b.b[key]
        return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)

    buildings = {k: cat(k) for k in ("cx", "cy", "length", "depth", "angle", "height")}
    buildings["use"] = cat("use", np.int64)
    buildings["zone"] = cat("zone", np.int64)
    n = len(buildings["cx"])
    # round geometry to the centimetre now, so what scene.json holds is exactly what was drawn and counted
    for k in ("cx", "cy", "length", "depth"):
        buildings[k] = np.round(buildings[k], 2)
    buildings["height"] = np.round(buildings["height"], 1)
    buildings["storeys"] = np.maximum(1, np.round(buildings["height"] / STOREY_M[buildings["use"]])).astype(np.int64)
    # independent of use and zone by construction: drawn from its own stream
    buildings["colour"] = rng.choice(len(ROOF_COLOURS), size=n, p=ROOF_COLOUR_P)
    buildings["material"] = rng.choice(len(ROOF_MATERIALS), size=n, p=ROOF_MATERIAL_P)
    buildings["tone"] = rng.uniform(-1, 1, (n, 3))  # per-roof colour jitter, for rendering only
    trees = {k: (np.round(np.concatenate(v), 2) if v else np.zeros(0)) for k, v in b.trees.items()}
    keep = (trees["x"] > 0) & (trees["y"] > 0) & (trees["x"] < b.L) & (trees["y"] < b.L)
    trees = {k: v[keep] for k, v in trees.items()}
    vehicles = {k: (np.round(v, 2) if v.dtype.kind == "f" else v) for k, v in vehicles.items()}
    lists = b.scene_lists
    return Scene(
        size=size,
        gsd=gsd,
        seed=seed,
        style=style,
        crs=crs,
        origin=origin,
        lonlat=lonlat,
        zones=lists["zones"],
        roads=b.roads,
        rail=lists["rail"],
        parks=lists["parks"],
        water=lists["water"],
        sports_fields=lists["sports_fields"],
        fields=lists["fields"],
        paved=lists["paved"],
        buildings=buildings,
        trees=trees,
        vehicles=vehicles,
        ground=b.ground,
    )


# ---------------------------------------------------------------- scene.json


def write_scene_json(scene: Scene, path, classes: dict, formulas: dict, extra: dict[str, Any]) -> None:
    """Stream scene.json: objects one by one, so a 16k city never builds one huge string."""
    ox, oy = scene.origin

    def pts(a: np.ndarray) -> list:
        a = np.asarray(a, np.float64)
        return [[round(ox + float(x), 2), round(oy - float(y), 2)] for x, y in a]

    def bbox(a: np.ndarray) -> list:
        a = np.asarray(a, np.float64)
        return [
            round(ox + float(a[:, 0].min()), 2),
            round(oy - float(a[:, 1].max()), 2),
            round(ox + float(a[:, 0].max()), 2),
            round(oy - float(a[:, 1].min()), 2),
        ]

    head = {
        "version": 1,
        "seed": scene.seed,
        "style": scene.style,
        "size": scene.size,
        "gsd": scene.gsd,
        "crs": scene.crs,
        "transform": list(scene.transform),
        "centre_lonlat": [round(scene.lonlat[0], 6), round(scene.lonlat[1], 6)],
        "sun": {"azimuth_deg": SUN_AZIMUTH_DEG, "elevation_deg": SUN_ELEVATION_DEG},
        "classes": {str(k): v for k, v in classes.items()},
        "formulas": formulas,
        **extra,
    }
    with open(path, "w", encoding="utf-8") as f:
        f.write(json.dumps(head, indent=1)[:-2] + ",\n")

        def section(name: str, items, last: bool = False) -> None:
            f.write(f' "{name}": [')
            first = True
            for item in items:
                f.write(("\n  " if first else ",\n  ") + json.dumps(item, separators=(",", ":")))
                first = False
            f.write("\n ]" + ("\n" if last else ",\n"))

        b = scene.buildings
        corners = scene.footprints()

        def buildings():
            for i in range(len(b["cx"])):
                yield {
                    "id": f"b{i}",
                    "use": USES[b["use"][i]],
                    "zone": ZONES[b["zone"][i]],
                    "footprint": pts(corners[i]),
                    "bbox": bbox(corners[i]),
                    "height_m": float(b["height"][i]),
                    "storeys": int(b["storeys"][i]),
                    "roof_colour": ROOF_COLOURS[b["colour"][i]][0],
                    "roof_material": ROOF_MATERIALS[b["material"][i]],
                    "footprint_m2": float(b["footprint_m2"][i]),
                    "floor_area_m2": float(b["floor_area_m2"][i]),
                    "population": float(b["population"][i]),
                    "carbon": float(b["carbon"][i]),
                    "gdp": float(b["gdp"][i]),
                    "nightlight": float(b["nightlight"][i]),
                    "noise": {k: float(b[f"noise_{k}"][i]) for k in ("population", "carbon", "gdp", "nightlight")},
                }

        def roads():
            for i, r in enumerate(scene.roads):
                yield {
                    "id": f"r{i}",
                    "class": r["class"],
                    "lanes": r["lanes"],
                    "width_m": r["width_m"],
                    "line": pts(r["line"]),
                    "bbox": bbox(r["line"]),
                    "length_m": r["length_m"],
                    "carbon": r["carbon"],
                    "nightlight": r["nightlight"],
                    "noise": r["noise"],
                }

        def polys(items, prefix, keys=()):
            for i, item in enumerate(items):
                yield {
                    "id": f"{prefix}{i}",
                    **{k: item[k] for k in keys},
                    "polygon": pts(item["polygon"]),
                    "bbox": bbox(item["polygon"]),
                }

        section("buildings", buildings())
        section("roads", roads())
        section(
            "rail",
            (
                {"id": f"rl{i}", "width_m": r["width_m"], "line": pts(r["line"]), "bbox": bbox(r["line"])}
                for i, r in enumerate(scene.rail)
            ),
        )
        section("parks", polys(scene.parks, "p"))
        section("water", polys(scene.water, "w", ("kind",)))
        section("sports_fields", polys(scene.sports_fields, "s"))
        section("fields", polys(scene.fields, "f", ("crop",)))
        section("paved", polys(scene.paved, "pv", ("kind",)))
        t = scene.trees
        section(
            "trees",
            (
                {
                    "id": f"t{i}",
                    "x": round(ox + float(t["x"][i]), 2),
                    "y": round(oy - float(t["y"][i]), 2),
                    "crown_m": float(t["crown"][i]),
                }
                for i in range(len(t["x"]))
            ),
        )
        v = scene.vehicles  # local headings run clockwise from east; scene.json holds compass bearings
        section(
            "vehicles",
            (
                {
                    "id": f"v{i}",
                    "x": round(ox + float(v["x"][i]), 2),
                    "y": round(oy - float(v["y"][i]), 2),
                    "kind": VEHICLE_KINDS[v["kind"][i]],
                    "heading_deg": round((90.0 + float(v["heading"][i])) % 360.0, 1),
                }
                for i in range(len(v["x"]))
            ),
        )
        section(
            "zones",
            (
                {"id": f"z{i}", "name": z["name"], "polygon": pts(z["polygon"]), "bbox": bbox(z["polygon"])}
                for i, z in enumerate(scene.zones)
            ),
            last=True,
        )
        f.write("}\n")
