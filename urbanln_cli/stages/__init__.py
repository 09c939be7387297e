"""The library: one module per stage, each a function of a frozen config.

Stages report progress through a ``progress(done, total)`` callback and never
import typer or rich, so they can be called from a notebook.
"""
