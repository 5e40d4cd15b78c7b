"""The grain pipeline across processes: resume in a new process (with and without worker
processes), and 2 jax processes reading disjoint shards whose union is the epoch."""
import dataclasses
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from helpers import REPO, VOCAB, assert_batches_equal, pipeline_config, random_records, take
from lumos_jax.data import pipeline

CFG = pipeline_config()




_RESUME_SCRIPT = textwrap.dedent("""
    import json, sys, numpy as np
    sys.path.insert(0, "tests")
    from helpers import VOCAB, pipeline_config, random_records
    import dataclasses
    from lumos_jax.data import pipeline
    CFG = pipeline_config()
    workers, state = int(sys.argv[1]), json.loads(sys.argv[2])
    cfg = dataclasses.replace(CFG, workers=workers)
    it = iter(pipeline.build([random_records()], cfg, VOCAB, process_index=0, process_count=1))
    it.set_state(state)
    out = [next(it) for _ in range(4)]
    np.savez(sys.argv[3], **{f"{i}_{k}": v for i, b in enumerate(out) for k, v in b.items()})
""")


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_in_a_new_process(tmp_path, workers):
  cfg = dataclasses.replace(CFG, workers=workers)
  records = random_records()
  it = iter(pipeline.build([records], cfg, VOCAB, process_index=0, process_count=1))
  take(it, 3)
  state = it.get_state()
  expected = take(it, 4)
  out = tmp_path / "next.npz"
  subprocess.run([sys.executable, "-c", _RESUME_SCRIPT, str(workers), json.dumps(state), str(out)],
                 cwd=REPO, check=True, timeout=300)
  got = np.load(out)
  got = [{k: got[f"{i}_{k}"] for k in pipeline.FIELDS} for i in range(4)]
  assert_batches_equal(got, expected)


_SHARD_SCRIPT = textwrap.dedent("""
    import os, sys, json
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    os.environ["JAX_PLATFORMS"] = "cpu"
    import jax
    jax.distributed.initialize(coordinator_address=sys.argv[1], num_processes=2,
                               process_id=int(sys.argv[2]), initialization_timeout=60)
    assert jax.device_count() == 8 and jax.local_device_count() == 4
    sys.path.insert(0, "tests")
    from helpers import VOCAB, random_records
    from lumos_jax.data import pipeline
    cfg = pipeline.PipelineConfig(seq_len=96, batch_size=1, seed=0, cfg_drop=0.0, num_epochs=1)
    seen = [b["targets"][0][b["valid"][0]].tolist()
            for b in pipeline.build([random_records(41)], cfg, VOCAB)]
    print("SEEN" + json.dumps(seen))
""")


def test_two_processes_read_disjoint_shards():
  import portpicker
  port = portpicker.pick_unused_port()
  procs = [subprocess.Popen([sys.executable, "-c", _SHARD_SCRIPT, f"127.0.0.1:{port}", str(i)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for i in range(2)]
  seen = []
  for p in procs:
    out, err = p.communicate(timeout=180)
    assert p.returncode == 0, err[-2000:]
    seen.append([tuple(x) for x in json.loads(out.split("SEEN", 1)[1])])
  assert set(seen[0]).isdisjoint(seen[1])
  assert sorted(seen[0] + seen[1]) == sorted(tuple(r["tokens"]) for r in random_records(41))
  assert abs(len(seen[0]) - len(seen[1])) <= 1


