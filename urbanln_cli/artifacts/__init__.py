"""Every read and write of an artifact: datasets folders, manifests, safetensors, shards.

Dataset artifacts are ``datasets.Dataset.save_to_disk`` folders with an
``urbanln.json`` manifest beside the data. They are built in a hidden staging
sibling and renamed into place, so a crash never leaves a half-written folder
under the final name. Resumable stages keep finished pieces in ``<out>.partial/``.

The modules: ``manifests`` (what an artifact records and checking it), ``outputs``
(guarded, locked, atomic writing and deletion), ``dataset_io``, ``tensors``,
``shards`` (resumable work), ``describe``, ``predictions`` (a probe's, read back) and
the export formats ``geoparquet`` and ``cog``. Everything is re-exported here, so
callers write ``artifacts.X``.
"""

from __future__ import annotations

from urbanln_cli.artifacts.cog import write_cog
from urbanln_cli.artifacts.dataset_io import REQUIRED_COLUMNS, read_dataset, write_dataset, write_sharded_dataset
from urbanln_cli.artifacts.describe import describe
from urbanln_cli.artifacts.geoparquet import read_geo_metadata, write_geoparquet
from urbanln_cli.artifacts.manifests import (
    MANIFEST_NAME,
    PRODUCERS,
    SCHEMA_VERSION,
    RunInfo,
    check_artifact,
    environment,
    fingerprint,
    new_manifest,
    read_manifest,
)
from urbanln_cli.artifacts.outputs import (
    PARTIAL_MARK,
    atomic_file,
    check_output,
    guard_path,
    output_lock,
    remove,
    remove_leftovers,
    remove_leftovers_in,
    staged_dir,
    write_json_atomic,
    writing,
)
from urbanln_cli.artifacts.predictions import probe_folder, read_predictions
from urbanln_cli.artifacts.safetensors_header import safetensors_summary
from urbanln_cli.artifacts.shards import ShardStore, commit_shard, partial_dir
from urbanln_cli.artifacts.tensors import IDS_IN_TENSORS, read_tensors, safetensors_os_errors, write_tensors

__all__ = [
    "IDS_IN_TENSORS",
    "MANIFEST_NAME",
    "PARTIAL_MARK",
    "PRODUCERS",
    "REQUIRED_COLUMNS",
    "SCHEMA_VERSION",
    "RunInfo",
    "ShardStore",
    "check_artifact",
    "check_output",
    "commit_shard",
    "describe",
    "environment",
    "fingerprint",
    "guard_path",
    "new_manifest",
    "output_lock",
    "partial_dir",
    "probe_folder",
    "read_dataset",
    "read_geo_metadata",
    "read_manifest",
    "read_predictions",
    "read_tensors",
    "remove",
    "remove_leftovers",
    "remove_leftovers_in",
    "safetensors_os_errors",
    "safetensors_summary",
    "staged_dir",
    "write_dataset",
    "write_json_atomic",
    "atomic_file",
    "write_sharded_dataset",
    "write_tensors",
    "write_cog",
    "write_geoparquet",
    "writing",
]
