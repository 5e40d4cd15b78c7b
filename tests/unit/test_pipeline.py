"""The grain pipeline: example contents, exact resume in process, mixing, and robustness to fuzzed
records (resume in a new process / with workers and per-process shards: tests/e2e)."""
import dataclasses
import logging

import numpy as np
import pytest

from helpers import (VOCAB, assert_batches_equal, pipeline_config, random_records, random_sample,
                     take)
from lumos_jax import tokens
from lumos_jax.data import pipeline


CFG = pipeline_config()




def test_examples_are_masked_padded_and_laid_out():
  records = random_records()
  batch = next(iter(pipeline.build([records], CFG, VOCAB, process_index=0, process_count=1)))
  assert set(batch) == set(pipeline.FIELDS)
  assert batch["inputs"].shape == (4, 96) and batch["positions"].shape == (4, 96, 3)
  for b in range(4):
    n = int(batch["valid"][b].sum())
    ids = batch["targets"][b][:n]
    lay = tokens.parse(ids, VOCAB)
    assert lay.frame.max() + 1 <= 2  # cut to max_frames
    np.testing.assert_array_equal(batch["k_end"][b][:n], lay.k_end)
    np.testing.assert_array_equal(batch["positions"][b][:n], lay.positions)
    masked = batch["inputs"][b] != batch["targets"][b]
    assert (batch["inputs"][b][masked] == VOCAB.mask).all()
    np.testing.assert_array_equal(batch["weights"][b][:n] > 0, masked[:n] & lay.code)
    assert not batch["valid"][b][n:].any() and not batch["weights"][b][n:].any()
    # the unmasked stream is one of the records (possibly text-dropped and frame-cut)
    starts = [r["tokens"] for r in records]
    assert any(np.array_equal(ids, tokens.cut_frames(np.array(s), tokens.parse(np.array(s), VOCAB),
                                                     2, VOCAB)[-n:]) for s in starts)


def test_background_weight_scales_only_masked_background_slots():
  """background_code/background_weight: masked slots whose true code is the background code get
  the weight, other masked code slots keep 1; the stream is otherwise the same."""
  records = random_records()
  plain = next(iter(pipeline.build([records], CFG, VOCAB, process_index=0, process_count=1)))
  code = int(np.bincount(plain["targets"][plain["weights"] > 0] - VOCAB.visual_offset).argmax())
  cfg = dataclasses.replace(CFG, background_code=code, background_weight=0.25)
  weighted = next(iter(pipeline.build([records], cfg, VOCAB, process_index=0, process_count=1)))
  background = (plain["weights"] > 0) & (plain["targets"] == VOCAB.visual_offset + code)
  assert background.any() and ((plain["weights"] > 0) & ~background).any()
  np.testing.assert_array_equal(weighted["weights"][background], 0.25)
  np.testing.assert_array_equal(weighted["weights"][~background], plain["weights"][~background])
  for f in pipeline.FIELDS:
    if f != "weights":
      np.testing.assert_array_equal(weighted[f], plain[f], f)


def test_cfg_drop_rate():
  cfg = pipeline.PipelineConfig(seq_len=96, batch_size=1, seed=0, cfg_drop=0.3, num_epochs=5)
  ds = pipeline.build([random_records(100)], cfg, VOCAB, process_index=0, process_count=1)
  firsts = np.array([b["targets"][0, 0] for b in ds])
  assert len(firsts) == 500
  assert abs(np.mean(firsts == VOCAB.video_start) - 0.3) < 0.06


def test_resume_in_process():
  records = random_records()
  full = take(iter(pipeline.build([records], CFG, VOCAB, process_index=0, process_count=1)), 8)
  it = iter(pipeline.build([records], CFG, VOCAB, process_index=0, process_count=1))
  take(it, 3)
  state = it.get_state()
  fresh = iter(pipeline.build([records], CFG, VOCAB, process_index=0, process_count=1))
  fresh.set_state(state)
  assert_batches_equal(take(fresh, 5), full[3:])


def test_fuzzed_records_are_rejected_and_valid_ones_pass(caplog):
  rng = np.random.default_rng(7)
  valid = random_records(50, seed=1)
  good = np.array(valid[0]["tokens"])
  huge = np.zeros(1_000_001, np.int32)  # one array shared by every "huge" record
  fuzz = []
  makers = [
      lambda: good[:int(rng.integers(1, len(good) - 1))].tolist(),           # truncated
      lambda: [str(x) for x in good],                                        # wrong types
      lambda: "not a list",
      lambda: None,
      lambda: (good + VOCAB.size).tolist(),                                  # ids out of range
      lambda: np.insert(good, int(np.flatnonzero(good == VOCAB.newline)[0]), 400).tolist(),  # row
      lambda: [],                                                            # empty
      lambda: huge,                                                          # huge
      lambda: rng.random(20).tolist(),                                       # floats
      lambda: [[1, 2], [3, 4]],                                              # nested
  ]
  for i in range(1000):
    fuzz.append({"id": f"fuzz{i}", "tokens": makers[i % len(makers)]()})
  mixed = []
  for i in range(1000):
    mixed.append(fuzz[i])
    if i % 20 == 0:
      mixed.append(valid[i // 20])
  cfg = pipeline.PipelineConfig(seq_len=96, batch_size=1, seed=0, cfg_drop=0.0, num_epochs=1)
  with caplog.at_level(logging.WARNING):
    out = list(pipeline.build([mixed], cfg, VOCAB, process_index=0, process_count=1))
  got = sorted(tuple(b["targets"][0][b["valid"][0]]) for b in out)
  assert got == sorted(tuple(r["tokens"]) for r in valid)
  skipped = [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipping record")]
  assert len(skipped) <= pipeline.WARN_FIRST * 20  # rate-limited: the first few per reason
  summaries = [r.getMessage() for r in caplog.records if "records skipped so far" in r.getMessage()]
  assert summaries  # then counts at 10x, 100x, ...
  assert all("skipping record fuzz" in m for m in skipped)
  assert any("more than max_record_tokens" in m for m in skipped)
  assert any("row length disagrees" in m for m in skipped)
  assert any("outside the vocabulary" in m for m in skipped)


def test_sources_mix_by_weight():
  rng = np.random.default_rng(11)
  images = [{"id": f"i{i}", "tokens": random_sample(rng, max_frames=1).tolist()} for i in range(30)]
  videos = [{"id": f"v{i}", "tokens": random_sample(rng).tolist()} for i in range(30)]
  image_set = {tuple(r["tokens"]) for r in images}
  cfg = pipeline.PipelineConfig(seq_len=96, batch_size=1, seed=0, cfg_drop=0.0)
  it = iter(pipeline.build([images, videos], cfg, VOCAB, weights=[1, 3], process_index=0,
                           process_count=1))
  picks = [tuple(b["targets"][0][b["valid"][0]]) in image_set for b in take(it, 400)]
  assert abs(np.mean(picks) - 0.25) < 0.05


def test_frames_beyond_the_attention_lookahead_are_refused(caplog):
  records = random_records(20)
  cfg = pipeline.PipelineConfig(seq_len=96, batch_size=1, seed=0, cfg_drop=0.0, num_epochs=1,
                                max_lookahead=10)
  with caplog.at_level(logging.WARNING):
    out = list(pipeline.build([records], cfg, VOCAB, process_index=0, process_count=1))
  long_frames = [r for r in records
                 if tokens.parse(np.array(r["tokens"]), VOCAB).max_lookahead > 10]
  assert long_frames and len(out) == len(records) - len(long_frames)
  assert any("model.max_lookahead=10" in r.getMessage() for r in caplog.records)
  # when every record is refused, the error keeps one record's own message: the value to raise
  # max_lookahead to, which the reason (numbers generalised) loses
  cfg = dataclasses.replace(cfg, max_lookahead=1, max_consecutive_bad=len(records))
  it = iter(pipeline.build([records], cfg, VOCAB, process_index=0, process_count=1))
  with pytest.raises(pipeline.NothingUsable,
                     match=r"\(e\.g\. record \S+: a frame block reaches \d+ keys ahead .* raise "
                     r"model\.max_lookahead to at least \d+ "):
    next(it)


def test_a_pipeline_with_no_usable_record_stops_with_the_reasons():
  """Every record longer than seq_len: the first batch raises, naming the count and the reason."""
  records = random_records(30)
  cfg = pipeline.PipelineConfig(seq_len=10, batch_size=1, seed=0, cfg_drop=0.0,
                                max_consecutive_bad=25)
  it = iter(pipeline.build([records], cfg, VOCAB, process_index=0, process_count=1))
  with pytest.raises(pipeline.NothingUsable,
                     match=r"25 of 25 consecutive records refused \(max_consecutive_bad=25\): "
                     r"25 longer than seq_len=10 \(the longest is \d+ tokens\)"):
    next(it)
  cfg = dataclasses.replace(cfg, max_consecutive_bad=1000)  # a 30-record epoch comes first
  it = iter(pipeline.build([records], cfg, VOCAB, process_index=0, process_count=1))
  with pytest.raises(pipeline.NothingUsable,
                     match=r"30 of 30 consecutive records refused \(a whole epoch"):
    next(it)
