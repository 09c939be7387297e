"""Finding imagery in the inputs and rendering tiles from it.

Three kinds of input, mixed freely:
- rasters (GeoTIFF and friends), cut into ``size`` windows that are streamed from disk;
- folders of pictures (PNG/JPEG, and TIFFs without georeferencing), one tile each;
- XYZ folders (``z/x/y.png``), one tile each, with Web-Mercator bounds.

``discover`` turns the inputs into a ``Plan`` of small picklable jobs; a
``Renderer`` (one per worker process) turns each job into a tile row.

Image files with more than ``max_pixels`` pixels are skipped (``skipped_oversize``) without
being decoded; stages that read tiles decode them through ``open_image`` too, with the limit
the tiles were made with (``max_pixels_of``). NaN pixels count as nodata. Two files of one folder that differ only by
extension (a.png, a.jpg) keep the extension in their tile ids.
"""

from __future__ import annotations

from urbanln_cli.imagery.discovery import (
    _INT,
    NAN,
    PICTURE_SUFFIXES,
    RASTER_SUFFIXES,
    XYZ_SUFFIXES,
    Picture,
    Plan,
    Raster,
    _add_folder,
    _add_picture,
    _add_raster,
    _add_xyz,
    _choose_bands,
    _crs_string,
    _is_xyz,
    _nodata_rule,
    _open_raster,
    _percentile_stretch,
    _read_locations,
    discover,
    parse_bands,
    window_offsets,
)
from urbanln_cli.imagery.limits import (
    _PIL_LOCK,
    DEFAULT_MAX_PIXELS,
    MAX_PIXELS_CEILING,
    OVERSIZE_HINT,
    ImageTooLarge,
    check_max_pixels,
    check_pixels,
    decode_tile,
    max_pixels_of,
    open_image,
)
from urbanln_cli.imagery.quadrants import QUADRANTS, quadrant_bounds, quadrant_boxes, quadrant_crops
from urbanln_cli.imagery.rendering import (
    GDAL_CACHE_BYTES,
    JPEG_QUALITY,
    Renderer,
    RenderOptions,
    Skip,
    Unreadable,
    _all_nodata,
    _blank,
    _finite,
    _read_picture,
    _read_plain_tiff,
    _to_uint8,
    parse_crop,
)

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "GDAL_CACHE_BYTES",
    "ImageTooLarge",
    "JPEG_QUALITY",
    "MAX_PIXELS_CEILING",
    "NAN",
    "OVERSIZE_HINT",
    "PICTURE_SUFFIXES",
    "Picture",
    "Plan",
    "QUADRANTS",
    "RASTER_SUFFIXES",
    "Raster",
    "RenderOptions",
    "Renderer",
    "Skip",
    "Unreadable",
    "XYZ_SUFFIXES",
    "_INT",
    "_PIL_LOCK",
    "_add_folder",
    "_add_picture",
    "_add_raster",
    "_add_xyz",
    "_all_nodata",
    "_blank",
    "_choose_bands",
    "_crs_string",
    "_finite",
    "_is_xyz",
    "_nodata_rule",
    "_open_raster",
    "_percentile_stretch",
    "_read_locations",
    "_read_picture",
    "_read_plain_tiff",
    "_to_uint8",
    "check_max_pixels",
    "check_pixels",
    "decode_tile",
    "discover",
    "max_pixels_of",
    "open_image",
    "parse_bands",
    "parse_crop",
    "quadrant_bounds",
    "quadrant_boxes",
    "quadrant_crops",
    "window_offsets",
]
