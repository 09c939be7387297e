"""One module per command: parse options, call a stage, render the result.

Each module has ``register(app)``. Heavy libraries are imported inside the
command functions so that ``urbanln --help`` stays fast.
"""
