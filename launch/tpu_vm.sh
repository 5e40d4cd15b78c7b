#!/usr/bin/env bash
# Runs the training command on every worker of a Cloud TPU VM slice at once (one process per
# worker host, all of its TPU chips), through `gcloud compute tpus tpu-vm ssh --worker=all`. Each
# process calls jax.distributed.initialize(), which finds the slice's workers and its own index
# from the TPU VM metadata: nothing to pass.
#
#   launch/tpu_vm.sh NAME ZONE --config=configs/lumos_1b.py --workdir=gs://BUCKET/runs/1b \
#       [--config.x=...]
#   DRY_RUN=1 launch/tpu_vm.sh NAME ZONE --config=... --workdir=...   # print, run nothing
#
# Every worker needs the same checkout at REPO_DIR with the package installed (for example:
# gcloud compute tpus tpu-vm ssh NAME --zone=ZONE --worker=all --command="git clone URL lumos_jax
# && cd lumos_jax && python3 -m venv .venv && .venv/bin/pip install -r requirements.txt -e .
# 'jax[tpu]==0.11.2'"). The workdir must be shared by the workers: a gs:// bucket (etils.epath and
# orbax write there; gcsfs must be installed for config.json and metrics).
#
# Env: PROJECT (gcloud --project; default: gcloud's configured project), REPO_DIR (the checkout on
# the workers, default lumos_jax, relative to the remote home), PYTHON (the remote interpreter,
# default .venv/bin/python inside REPO_DIR), GCLOUD_ARGS (extra `gcloud ... ssh` arguments, e.g.
# --internal-ip or --tunnel-through-iap), DRY_RUN=1 (print the gcloud command and what every
# worker runs).
set -euo pipefail
if [ $# -lt 3 ]; then
  echo "usage: launch/tpu_vm.sh NAME ZONE --config=configs/<name>.py --workdir=gs://... " \
    "[--config.x=...]" >&2
  exit 2
fi
name=$1 zone=$2
shift 2
repo_dir=${REPO_DIR:-lumos_jax}
python=${PYTHON:-.venv/bin/python}

# The remote command is one string run by the worker's login shell: quote every argument.
remote="cd ${repo_dir@Q} && ${python@Q} -m lumos_jax.train"
for arg in "$@" --config.distributed.enabled=True; do
  remote+=" ${arg@Q}"
done
# shellcheck disable=SC2206  # GCLOUD_ARGS is a list of words on purpose
gcloud_cmd=(gcloud compute tpus tpu-vm ssh "$name" --zone="$zone"
            ${PROJECT:+--project="$PROJECT"} --worker=all ${GCLOUD_ARGS:-} --command="$remote")

if [ -n "${DRY_RUN:-}" ]; then
  echo "# dry run: nothing started. This machine would run:"
  echo "${gcloud_cmd[*]@Q}"
  echo "# and every worker of TPU VM $name (zone $zone), in its own environment (no variables" \
    "set; jax.distributed reads the worker index from the TPU metadata), runs:"
  echo "$remote"
  exit 0
fi
exec "${gcloud_cmd[@]}"
