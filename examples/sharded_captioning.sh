#!/usr/bin/env bash
# Caption one tiles dataset on several machines, then merge the parts with fuse.
# On machine i of n (0-based), each with its own Ollama server:
#   examples/sharded_captioning.sh part I N
# Then copy every captions_part*/ folder to one machine and run:
#   examples/sharded_captioning.sh merge
set -euo pipefail
case ${1:-} in
  part)
    i=$2 n=$3
    # the shard is a stable hash of tile_id: the n parts cover every tile exactly once
    urbanln caption tiles/ --models llava,qwen-vl --shard "$i/$n" -o "captions_part$i"
    ;;
  merge)
    urbanln fuse captions_part*/ --tiles tiles/ -o corpus/
    ;;
  *)
    echo "usage: $0 part I N | merge" >&2; exit 2 ;;
esac
