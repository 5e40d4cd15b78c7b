"""The training loop's pipeline settings: the eval split does not follow the run's seed."""
import numpy as np

from helpers import VOCAB, assert_batches_equal, random_records, take
from lumos_jax import config
from lumos_jax.data import pipeline
from lumos_jax.train import loop


def _first_batches(cfg, eval_split: bool) -> list[dict]:
  ds = pipeline.build([random_records()], loop.pipeline_config(cfg, eval_split=eval_split), VOCAB,
                      process_index=0, process_count=1)
  return take(iter(ds), 2)


def test_eval_batches_do_not_depend_on_the_run_seed():
  cfgs = [config.load("tiny") for _ in range(2)]
  for cfg, seed in zip(cfgs, (0, 7)):
    cfg.seed = seed
    cfg.data.update(seq_len=96, batch_size=4, max_frames=2)
  assert_batches_equal(*(_first_batches(c, eval_split=True) for c in cfgs))
  train = [_first_batches(c, eval_split=False)[0] for c in cfgs]  # the run's seed drives training
  assert not np.array_equal(train[0]["inputs"], train[1]["inputs"])
