"""Deterministic text processing for ``fuse``: cleaning, claim parsing, matching, token counts.

Nothing here loads a model or touches the network; the same input always gives
the same output. ``lexicon`` holds the urban vocabulary (concepts, synonyms,
attributes, visibility limits), which a user extends with a TOML or JSON file.
"""
