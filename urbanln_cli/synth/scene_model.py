"""What a synthetic scene is made of: land-cover classes, zones, roof, vehicle and crop vocabularies,
per-zone layouts, and the ``Scene`` record itself."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from urbanln_cli.synth import geometry as geo

STYLES = ("radial", "grid", "linear")
CLASSES = {
    0: "water",
    1: "park/vegetation",
    2: "road",
    3: "residential building",
    4: "commercial building",
    5: "industrial building",
    6: "bare/farmland",
    7: "other paved (plazas, parking, yards)",
    8: "trees",
    9: "rail",
}
USES = ("residential", "commercial", "industrial")
USE_CLASS = np.array([3, 4, 5], np.uint8)
ZONES = (
    "centre",
    "residential_high",
    "residential_mid",
    "residential_low",
    "industrial",
    "park",
    "village",
    "farmland",
)
Z = {name: i for i, name in enumerate(ZONES)}
ROOF_COLOURS = (
    ("light grey", (186, 186, 182)),
    ("dark grey", (92, 95, 100)),
    ("white", (228, 228, 222)),
    ("blue", (78, 112, 158)),
    ("red", (158, 70, 58)),
    ("terracotta", (176, 102, 68)),
    ("green", (88, 126, 98)),
    ("beige", (204, 188, 150)),
    ("brown", (116, 90, 70)),
    ("teal", (66, 136, 136)),
)
ROOF_COLOUR_P = np.array([0.2, 0.14, 0.12, 0.1, 0.08, 0.08, 0.06, 0.1, 0.07, 0.05])
ROOF_MATERIALS = ("concrete", "metal", "tile", "membrane", "gravel")
ROOF_MATERIAL_P = np.array([0.34, 0.2, 0.18, 0.16, 0.12])
STOREY_M = np.array([3.0, 4.0, 6.0])  # residential, commercial, industrial
ROAD_CLASSES = ("highway", "arterial", "local")
VEHICLE_KINDS = ("car", "bus", "truck")
VEHICLE_SIZE = {"car": (4.6, 1.9), "bus": (12.0, 2.6), "truck": (9.0, 2.5)}
SUN_AZIMUTH_DEG = 135.0  # sun in the south-east (mid-morning), so shadows fall to the north-west
SUN_ELEVATION_DEG = 52.0
SETBACK_M = 5.0  # from a street's edge to a building; leaves room for street trees

# Per zone: street grid spacing (m) along and across, street width (m), lanes, building use odds.
ZONE_LAYOUT = {
    "centre": ((135, 105), 12.0, 2, (0.22, 0.78, 0.0)),
    "residential_high": ((175, 135), 10.0, 2, (0.88, 0.12, 0.0)),
    "residential_mid": ((135, 110), 9.0, 2, (0.92, 0.08, 0.0)),
    "residential_low": ((95, 62), 7.0, 2, (0.95, 0.05, 0.0)),
    "industrial": ((230, 175), 12.0, 2, (0.0, 0.12, 0.88)),
    "village": ((0, 0), 4.0, 1, (0.9, 0.05, 0.05)),
}


@dataclass
class Scene:
    size: int
    gsd: float
    seed: int
    style: str
    crs: str
    origin: tuple[float, float]  # CRS x of the left edge, y of the top edge
    lonlat: tuple[float, float]
    zones: list[dict] = field(default_factory=list)  # name, polygon
    roads: list[dict] = field(default_factory=list)  # class, lanes, width_m, line
    rail: list[dict] = field(default_factory=list)  # line, width_m
    parks: list[dict] = field(default_factory=list)
    water: list[dict] = field(default_factory=list)  # kind, polygon
    sports_fields: list[dict] = field(default_factory=list)
    fields: list[dict] = field(default_factory=list)  # farmland: polygon, crop
    paved: list[dict] = field(default_factory=list)  # plazas, parking, yards: polygon, kind
    buildings: dict[str, np.ndarray] = field(default_factory=dict)  # struct of arrays
    trees: dict[str, np.ndarray] = field(default_factory=dict)
    vehicles: dict[str, np.ndarray] = field(default_factory=dict)
    ground: list[tuple[np.ndarray, int]] = field(default_factory=list)  # per district: polygon, zone code

    @property
    def extent(self) -> float:
        return self.size * self.gsd

    @property
    def transform(self) -> tuple[float, float, float, float, float, float]:
        return (self.gsd, 0.0, self.origin[0], 0.0, -self.gsd, self.origin[1])

    def footprints(self) -> np.ndarray:
        b = self.buildings
        return geo.rect_corners(b["cx"], b["cy"], b["length"], b["depth"], b["angle"])


CROPS = (
    ("wheat", (168, 160, 96)),
    ("young wheat", (118, 146, 70)),
    ("maize", (96, 128, 58)),
    ("vegetables", (82, 118, 66)),
    ("fallow", (150, 128, 100)),
    ("ploughed", (126, 102, 80)),
    ("greenhouse", (208, 210, 206)),
    ("orchard", (74, 104, 60)),
)
