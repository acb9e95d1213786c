#!/usr/bin/env bash
# torchrun-style launcher for llava-train, sourced by the stage scripts.
#   launch_llava_train [--nproc_per_node N] [--nnodes N] [--node_rank R] [--master_addr A] [--master_port P] -- ARGS...
# Starts N local processes with RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT set.
# When those variables are already set (an external `torchrun --no-python` or srun started us), runs one
# process as it is. If one local process fails, the others are stopped and its exit code is returned.

LLAVA_TRAIN=${LLAVA_TRAIN:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/build/llava-train}

launch_llava_train() {
  local nproc=1 nnodes=1 node_rank=0 addr=127.0.0.1 port=29500
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --nproc_per_node) nproc=$2; shift 2 ;;
      --nnodes) nnodes=$2; shift 2 ;;
      --node_rank) node_rank=$2; shift 2 ;;
      --master_addr) addr=$2; shift 2 ;;
      --master_port) port=$2; shift 2 ;;
      --) shift; break ;;
      *) break ;;
    esac
  done
  if [[ -n "${RANK:-}" && -n "${WORLD_SIZE:-}" ]] || [[ -n "${SLURM_PROCID:-}" && "$nproc" == 1 ]]; then
    exec "$LLAVA_TRAIN" "$@"   # started by torchrun/srun: one process, environment as given
  fi
  if [[ "$nproc" == 1 && "$nnodes" == 1 ]]; then
    "$LLAVA_TRAIN" "$@"
    return $?
  fi
  local world=$((nproc * nnodes)) pids=() rc=0
  for ((local_rank = 0; local_rank < nproc; local_rank++)); do
    RANK=$((node_rank * nproc + local_rank)) WORLD_SIZE=$world LOCAL_RANK=$local_rank \
      LOCAL_WORLD_SIZE=$nproc MASTER_ADDR=$addr MASTER_PORT=$port "$LLAVA_TRAIN" "$@" &
    pids+=($!)
  done
  trap 'kill "${pids[@]}" 2>/dev/null' INT TERM
  # Wait for the first process to end; if it failed, stop the rest (a peer error must not hang the job).
  for _ in "${pids[@]}"; do
    local r=0
    wait -n || r=$?
    if (( r != 0 )); then rc=$r; kill "${pids[@]}" 2>/dev/null; break; fi
  done
  wait 2>/dev/null
  return $rc
}
