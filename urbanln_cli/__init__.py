"""urbanln: learn urban region representations from imagery and noisy long captions.

The stages (``urbanln_cli.stages``) are a plain Python library; the Typer CLI in
``urbanln_cli.cli`` is a thin layer on top of them.
"""

__version__ = "0.1.0"
