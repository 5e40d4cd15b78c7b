#!/usr/bin/env bash
# The accelerator check on this machine's first device: versions, matmul and copy rates, every
# attention implementation, the 1B train step and 1B sampling (benchmarks/accelerator.py, about
# 7 minutes on one H100/H200, estimated from the sections of the first H200 run), then a
# one-line summary.
#
#   launch/accelerator_check.sh [flags of benchmarks/accelerator.py, e.g. --sections=attention]
#
# Offline GPU machines: tokamax and its small dependencies come from ./wheelhouse when that
# directory exists and tokamax is not importable (make it where pip reaches PyPI, see the docstring
# of benchmarks/accelerator.py; keep it out of git). xprof, which tokamax lists but imports only for
# its own profiling, is left out on purpose: lumos_jax.attention_kernels stubs it.
#
# Env: PYTHON (default python3); OUT: if set, the JSON goes to $OUT/accelerator.json (else
# /tmp/accelerator.json, or pass --out=); GPU_ENV=0 skips sourcing launch/gpu_env.sh (XLA flags and
# XLA_PYTHON_CLIENT_MEM_FRACTION=0.90, which the 1B train step on one GPU wants).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
wheels=(tokamax==0.0.17 jaxtyping wadler-lindig pydantic pydantic-core annotated-types
        typing-inspection qwix einshape)

if [ -d wheelhouse ] && ! "$python" -c "import tokamax" 2>/dev/null; then
  echo "installing ${wheels[*]} from ./wheelhouse (no index)"
  # Unpinned names already installed are kept; --no-deps: xprof is not in the wheelhouse.
  "$python" -m pip install --quiet --no-index --find-links=wheelhouse --no-deps "${wheels[@]}"
fi
if [ "${GPU_ENV:-1}" != 0 ]; then
  # shellcheck source=gpu_env.sh
  source launch/gpu_env.sh
fi

out=/tmp/accelerator.json
if [ -n "${OUT:-}" ]; then
  out=$OUT/accelerator.json
fi
status=0
"$python" benchmarks/accelerator.py --out="$out" "$@" || status=$?
for arg in "$@"; do  # a later --out= wins, as in absl
  case $arg in --out=*) out=${arg#--out=} ;; esac
done
if [ -f "$out" ]; then
  "$python" - "$out" <<'PY'
import json, sys

r = json.load(open(sys.argv[1]))
def pick(section, key):
  rows = (r.get(section) or {}).get("impls") or {}
  ok = {n: v[key] for n, v in rows.items() if v.get("status") == "ok" and key in v}
  return ", ".join(f"{n} {v:.1f}ms" for n, v in sorted(ok.items(), key=lambda x: x[1])) or "n/a"
v, t = r.get("versions") or {}, (r.get("throughput") or {})
train = {k: x for k, x in ((r.get("train_step") or {}).get("runs") or {}).items()
         if x.get("status") == "ok"}
samp = {k: x for k, x in ((r.get("sampling") or {}).get("runs") or {}).items()
        if x.get("status") == "ok"}
print(f"SUMMARY {v.get('device_kind')} jax {v.get('jax')} tokamax {v.get('tokamax')} | "
      f"matmul {(t.get('matmul') or {}).get('tflops', float('nan')):.0f} TFLOP/s, copy "
      f"{(t.get('copy') or {}).get('gb_per_s', float('nan')):.0f} GB/s | attention fwd+bwd: "
      f"{pick('attention', 'fwd_bwd_ms')} | cache fwd: {pick('cache_attention', 'fwd_ms')} | "
      "train: " + ", ".join(f"{x['model.attention']} {x['tokens_per_s']:,.0f} tok/s MFU "
                            f"{x['mfu_vs_reference']:.1%}" for x in train.values()) +
      " | sampling: " + ", ".join(f"{x['model.attention']} {x['s_per_frame_at_full_steps']:.2f} "
                                  "s/frame" for x in samp.values()) +
      f" | {len(r.get('errors', []))} errors | {sys.argv[1]}")
PY
fi
exit $status
