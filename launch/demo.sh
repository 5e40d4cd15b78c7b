#!/usr/bin/env bash
# The README's first command after the install: train the demo model on the embedded synthetic
# videos, write one generated video, score caption adherence on held-out captions.
#
#   launch/demo.sh [WORKDIR]            # default /tmp/lumos_demo; PYTHON=.venv/bin/python
#
# Stages, each printing its own progress and ETA: dataset generation and training
# (python -m lumos_jax.train --config=configs/demo.py), one sample (python -m lumos_jax.sample),
# the evaluation (python -m lumos_jax.synthetic.evaluate). A stage that fails stops the script
# with its exit code; a rerun resumes training from the last checkpoint in WORKDIR.
#
# CPU settings, measured on 2 cores (README "Demo run"): XLA_FLAGS splits the host into
# CPU_DEVICES devices (default: one per core, at most 8; the demo's batch is data-parallel over
# them, with the same losses as on one device), and GLIBC_TUNABLES=glibc.malloc.hugetlb=1 makes
# malloc ask for transparent huge pages (XLA's per-step temporaries then fault in 2 MiB pages).
# Together +44% steps/s. On a single device the bfloat16 step needs another YNNPACK setting (754
# instead of 160-188 ms per step; lumos_jax/train/distributed.py, CPU_BF16_ONE_DEVICE_FLAG).
# Values already in the environment win.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
workdir=${1:-/tmp/lumos_demo}
cores=$(nproc 2>/dev/null || echo 1)
devices=${CPU_DEVICES:-$(( cores < 8 ? cores : 8 ))}
xla_flags="--xla_force_host_platform_device_count=$devices"
if [ "$devices" -eq 1 ]; then
  xla_flags+=" --xla_cpu_experimental_ynn_fusion_type=dot"
fi
export XLA_FLAGS=${XLA_FLAGS:-$xla_flags}
export GLIBC_TUNABLES=${GLIBC_TUNABLES:-glibc.malloc.hugetlb=1}
export JAX_PLATFORMS=${JAX_PLATFORMS:-cpu}

start=$(date +%s)
stage() {  # stage N NAME: a banner with the time spent so far
  echo "== stage $1/3: $2 ($(( $(date +%s) - start )) s so far) =="
}

stage 1 "dataset + training ($devices CPU devices)"
"$python" -m lumos_jax.train --config=configs/demo.py --workdir="$workdir"
stage 2 "one sample"
# top_k=1, guidance=1.5: each committed code the likeliest after a milder guidance. On the
# 2,400-step demo models (training seeds 0 and 1, two sampling seeds each) temporal consistency
# 0.60-0.69 and shape 0.62-0.77, against 0.47-0.55 and 0.66-0.72 with top-k 3 and guidance 3.
# code_bias=0:0.6: the empty patch e^0.6 times likelier, so objects come out nearer their size:
# over training seeds 0-2 x two sampling seeds area_ratio 1.10-1.20 instead of 1.27-1.43, with
# shape 0.59-0.87, direction 0.94-1.00, temporal 0.61-0.77 (commit 737893b; since the attention
# layout change of 0c87260, other models: area 1.07-1.26, temporal 0.55-0.79; README "Demo run")
sampling=(--steps=16 --guidance=1.5 --top_k=1 --code_bias=0:0.6)
"$python" -m lumos_jax.sample --workdir="$workdir" --prompt="a red circle moves left" \
  "${sampling[@]}" --out="$workdir/sample.gif"
stage 3 "evaluation"
"$python" -m lumos_jax.synthetic.evaluate --workdir="$workdir" "${sampling[@]}"
echo "== done in $(( $(date +%s) - start )) s: $workdir/sample.gif, $workdir/eval/ =="
