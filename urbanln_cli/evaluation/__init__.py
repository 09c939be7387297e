"""Evaluation helpers for ``urbanln probe``: splits, ridge and MLP heads, metrics and plots.

Pure numpy (torch only for the MLP head, matplotlib only for plots), no typer or rich.
"""
