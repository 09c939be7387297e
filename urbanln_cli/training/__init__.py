"""Training plumbing for ``pretrain``: the tile/caption dataset, resumable sampling, checkpoints, run folders."""
