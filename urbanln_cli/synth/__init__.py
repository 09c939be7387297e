"""The synthetic city: imagery, land cover, indicator rasters and a scene description.

``synth_city(SynthConfig(out=...))`` writes a folder that every other stage can
read (``tile`` on imagery.tif, ``label`` on the indicator rasters); scene.json
says what every pixel and indicator value comes from. See docs/synthetic-city.md.
"""

from urbanln_cli.synth.city import SynthConfig, SynthResult, synth_city
from urbanln_cli.synth.scene import CLASSES, STYLES

__all__ = ["CLASSES", "STYLES", "SynthConfig", "SynthResult", "synth_city"]
