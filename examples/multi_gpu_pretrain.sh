#!/usr/bin/env bash
# Pretrain on all GPUs of one machine with torchrun (PyTorch DDP). --batch-size is the global batch;
# rank 0 writes the run folder. For several machines, add --nnodes, --node_rank and --rdzv_endpoint.
# Rerun the same command after a crash to resume from the last checkpoint.
# Usage: examples/multi_gpu_pretrain.sh [GPUS] [NAME]
set -euo pipefail
gpus=${1:-$(nvidia-smi -L | wc -l)} name=${2:-ddp}
torchrun --nproc_per_node "$gpus" -m urbanln_cli pretrain \
  --tiles tiles/ --corpus corpus/ --name "$name" \
  --arch ViT-B-16 --pretrained openai --epochs 20 --batch-size 512 --queue-size 8192 --workers 8
