#!/usr/bin/env bash
# Starts N training processes on this machine, joined with jax.distributed over localhost: the
# multi-host code path on one box (CPU devices are split between the processes).
#
#   launch/local.sh N --config=configs/tiny.py --workdir=/tmp/run [--config.x=...]
#
#   DRY_RUN=1 launch/local.sh 2 --config=...    # print each process's command and env, run nothing
#
# Env: DEVICES_PER_PROCESS (CPU devices each process forces, default 4), PORT (coordinator port,
# default: a free one), PYTHON (default: python3), JAX_PLATFORMS (default cpu), GLIBC_TUNABLES
# (default glibc.malloc.hugetlb=1: malloc asks for transparent huge pages, so XLA's multi-GiB CPU
# temporaries fault in 2 MiB pages: 40x fewer page faults, half the system time, measured in
# README "Rematerialisation"), DRY_RUN=1.
# Process i's output goes to $LOG_DIR/process_i.log (default /tmp/lumos_local_logs); process 0's
# is also echoed.
set -euo pipefail
if [ $# -lt 1 ] || ! [[ $1 =~ ^[0-9]+$ ]]; then
  echo "usage: launch/local.sh N --config=configs/<name>.py --workdir=DIR [--config.x=...]" >&2
  exit 2
fi
n=$1; shift
args=("$@")
python=${PYTHON:-python3}
# A free port: bind to port 0 and let the kernel choose one.
port=${PORT:-$($python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])')}
devices=${DEVICES_PER_PROCESS:-4}
platforms=${JAX_PLATFORMS:-cpu}
tunables=${GLIBC_TUNABLES:-glibc.malloc.hugetlb=1}
log_dir=${LOG_DIR:-/tmp/lumos_local_logs}

process_cmd() {  # the command of process $1, into the array `cmd`
  cmd=("$python" -m lumos_jax.train "${args[@]}" --config.distributed.enabled=True
       --config.distributed.coordinator="127.0.0.1:$port" --config.distributed.num_processes="$n"
       --config.distributed.process_id="$1")
}

if [ -n "${DRY_RUN:-}" ]; then
  echo "# dry run: nothing started. $n processes on this machine, each with the environment:"
  echo "XLA_FLAGS=--xla_force_host_platform_device_count=$devices JAX_PLATFORMS=$platforms" \
    "GLIBC_TUNABLES=$tunables"
  for ((i = 0; i < n; i++)); do
    process_cmd "$i"
    echo "process $i: ${cmd[*]@Q} > $log_dir/process_$i.log"
  done
  exit 0
fi

mkdir -p "$log_dir"
pids=()
for ((i = 0; i < n; i++)); do
  process_cmd "$i"
  XLA_FLAGS="--xla_force_host_platform_device_count=$devices" JAX_PLATFORMS=$platforms \
    GLIBC_TUNABLES=$tunables "${cmd[@]}" > "$log_dir/process_$i.log" 2>&1 &
  pids+=($!)
done
trap 'kill "${pids[@]}" 2>/dev/null || true' INT TERM
status=0
for i in "${!pids[@]}"; do
  wait "${pids[$i]}" || {
    status=$?
    echo "process $i failed (exit $status): see $log_dir/process_$i.log" >&2
  }
done
cat "$log_dir/process_0.log"
exit $status
