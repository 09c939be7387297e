#!/usr/bin/env bash
# Caption a tiles dataset with transformers models on one GPU node (no Ollama server), then fuse the parts.
# One process per GPU, each with its own shard, output folder and journal; they share nothing.
#
#   sbatch --gres=gpu:4 examples/hf_caption_slurm.sh      # or run it directly on a GPU machine
#
# The weights must be in the Hugging Face cache (or a local folder) first: caption never downloads.
#   hf download Qwen/Qwen2.5-VL-7B-Instruct && hf download OpenGVLab/InternVL3-8B-hf
# Killed or preempted? Submit the same script again: every part resumes from its journal.
#SBATCH --job-name=urbanln-caption
#SBATCH --nodes=1
#SBATCH --gres=gpu:4
#SBATCH --cpus-per-task=16
#SBATCH --time=12:00:00
set -euo pipefail
export HF_HUB_OFFLINE=1  # compute nodes often have no internet: fail fast with the download hint instead
GPUS=${GPUS:-$(nvidia-smi -L | wc -l)}
MODELS=${MODELS:-hf:qwen2.5-vl-7b,hf:internvl3-8b}

# rank r captions shard r/GPUS on GPU r into captions-<r>of<GPUS>/
torchrun --standalone --nproc-per-node "$GPUS" -m urbanln_cli caption tiles/ \
  --models "$MODELS" --batch-size 16 -o captions
# (without torchrun, the same with one process per GPU:
#   for i in $(seq 0 $((GPUS-1))); do
#     CUDA_VISIBLE_DEVICES=$i urbanln caption tiles/ --models "$MODELS" --shard "$i/$GPUS" -o "captions-${i}of${GPUS}" &
#   done; wait)

# fuse reads every part at once
urbanln fuse captions-*of"$GPUS"/ --tiles tiles/ -o corpus/
