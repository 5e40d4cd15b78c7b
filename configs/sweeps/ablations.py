"""Ablations on the embedded dataset (configs/demo.py: 600 steps, eval loss every 100 steps):
RoPE variant {1d, 3d, mm} x training mask kind {random, tube, per_frame}, 9 runs. One demo run
trains in about 20 minutes on 2 CPU cores, so the sweep takes about 3 hours there; on a cluster
print the sbatch lines with --launcher=slurm. The summary compares eval_loss and
eval_loss_frame0..7.

Run: python -m lumos_jax.sweep configs/sweeps/ablations.py --workdir=/tmp/lumos_ablations

The inference history mask {0, 0.3, 0.7} is a sampling setting, not a training one, so it is no
axis of this sweep (the sweep format holds training overrides only). Score caption adherence of
every finished run at each setting (32 held-out captions; shape / colour / direction accuracy):
  for run in /tmp/lumos_ablations/*/; do for h in 0 0.3 0.7; do
    python -m lumos_jax.synthetic.evaluate --workdir=$run --history_mask=$h \\
        --out=$run/eval_h$h --json > $run/eval_h$h.json
  done; done
"""
from lumos_jax import config, sweep


def get_config():
  """The demo config, unchanged: every run differs from it only in the swept fields."""
  return config.load("demo")


def get_sweep():
  return sweep.product({"model.rope_variant": ("1d", "3d", "mm"),
                        "data.mask.kind": ("random", "tube", "per_frame")})
