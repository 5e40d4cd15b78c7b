"""Issue 16's pieces without training: the harder synthetic variant, per-frame scores, the report's
statistics and verdicts, and the report written from known results."""
import math

import numpy as np
import pytest
from etils import epath

from lumos_jax.synthetic import ablation_report as rep, dataset as synthetic, score as ss

HARD = synthetic.SyntheticConfig(distractors=1)
CHANCE = {"shape_acc": 0.25, "color_acc": 0.125, "direction_acc": 0.25}


def test_distractor_variant_is_deterministic_and_occluded_by_the_captioned_object():
  visible = 0
  for i in range(40):
    s = synthetic.generate(5, i, HARD)
    assert (s.video == synthetic.generate(5, i, HARD).video).all()
    colours = {tuple(c) for c in s.video.reshape(-1, 3)} - {tuple(synthetic.PALETTE[0])}
    assert tuple(synthetic.COLOURS[s.colour]) in colours and len(colours) <= 2, (i, colours)
    visible += len(colours) == 2  # a distractor may hide wholly behind the object
    # drawn last, the captioned object is whole: the scorer finds it as on the plain dataset
    r = ss.score(s.video, s.caption, HARD)
    assert r["shape_acc"] == r["color_acc"] == r["direction_acc"] == 1.0, (i, s.caption, r)
    plain = synthetic.generate(5, i)  # the captioned object's draws are those of the plain one
    assert plain.caption == s.caption and (plain.centres == s.centres).all()
  assert visible >= 36


def test_distractor_settings_are_checked():
  with pytest.raises(ValueError, match="distractor_size"):
    synthetic.SyntheticConfig(distractors=1, distractor_size=5)
  with pytest.raises(ValueError, match="distractors=8"):
    synthetic.SyntheticConfig(distractors=8)


def test_per_frame_scores_average_to_the_video_scores():
  tok = synthetic.PatchTokenizer(HARD)
  for i in range(20):
    s = synthetic.generate(2, i, HARD)
    video = tok.decode(tok.encode(s.video))
    video[3] = synthetic.PALETTE[0]  # one empty frame: wrong in every per-frame score
    frames, whole = ss.per_frame(video, s.caption, HARD), ss.score(video, s.caption, HARD)
    assert frames["shape_acc"][3] == frames["color_acc"][3] == 0
    assert np.isnan(frames["path_offset_px"][3])
    assert frames["shape_acc"].mean() == whole["shape_acc"]
    assert frames["color_acc"].mean() == whole["color_acc"]
    rms = math.sqrt(np.nanmean(frames["path_offset_px"] ** 2))
    assert rms == pytest.approx(whole["trajectory_error_px"])


def test_intervals_and_verdicts():
  e = rep.estimate([1.0, 2.0, 3.0, None])
  assert (e.mean, e.n) == (2.0, 3) and e.half == pytest.approx(4.303 / math.sqrt(3))
  assert math.isnan(rep.estimate([1.0]).half)
  a, b = [1.0, 1.2, 1.4], [2.0, 2.1, 2.2]  # Welch by hand: var/n = 0.04/3 and 0.01/3
  va, vb = 0.04 / 3, 0.01 / 3
  df = (va + vb) ** 2 / (va ** 2 / 2 + vb ** 2 / 2)
  d = rep.welch(a, b)
  assert d.mean == pytest.approx(-0.9) and d.half == pytest.approx(
      rep.T975[int(df) - 1] * math.sqrt(va + vb))
  assert rep.verdict(d, "negative") == "reproduced"
  assert rep.verdict(d, "positive") == "not reproduced"
  assert rep.verdict(rep.welch([1.0, 2.0, 3.0], [1.5, 2.5, 3.5]), "negative") == "inconclusive"
  p = rep.paired({0: 1.0, 1: 2.0, 2: 3.0}, {0: 0.5, 1: 1.4, 2: 2.6, 3: 9.0})  # seed 3 unpaired
  assert p.mean == pytest.approx(0.5) and p.n == 3


def _run(rope, mask, seed, loss, frame0, rng, rhos=("0.7",), adherence=None):
  """A finished run's results as `ablations.collect` writes them."""
  later = loss * (1 + 0.01 * rng.standard_normal())
  evals = {}
  for rho in rhos:
    a = (adherence or {}).get(rho, 0.5) + 0.01 * rng.standard_normal()
    evals[rho] = {"shape_acc": a, "color_acc": a, "direction_acc": a, "temporal_consistency": a,
                  "trajectory_error_px": 1.0, "wall_s": 60.0, "chance": CHANCE,
                  "frames": {"shape_acc": [0.9] + [a] * 7, "color_acc": [0.9] + [a] * 7,
                             "path_offset_px": [0.5] * 8}}
  return {"name": f"{rope}-{mask}-{seed}", "rope": rope, "mask": mask, "seed": seed,
          "status": "finished", "steps": 10, "eval_loss": later,
          "eval_loss_frames": [frame0] + [later] * 7, "train_wall_s": 100.0, "evals": evals}


def test_report_gives_each_claim_its_verdict(tmp_path):
  rng = np.random.default_rng(0)
  runs = []
  for seed in range(3):
    for rope, loss in (("1d", 1.3), ("3d", 1.2), ("mm", 1.0)):  # claim 1 holds clearly
      rhos = ("0", "0.3", "0.7") if rope == "mm" else ("0.7",)
      runs.append(_run(rope, "tube", seed, loss, 1.0, rng, rhos,
                       {"0": 0.6, "0.3": 0.6, "0.7": 0.3}))  # claim 3 goes the other way
    # no imbalance, the same adherence as tube masking: inconclusive
    runs.append(_run("mm", "random", seed, 1.0, 1.0, rng, adherence={"0.7": 0.3}))
  results = {"runs": runs, "sweep": "s.py", "n": 32, "command_wall_s": 1.0,
             "sampling": {"steps": 16, "cfg_scale": 3.0, "top_k": 3},
             "setup": {"steps": 10, "batch_size": 8, "d_model": 128, "n_layers": 4,
                       "distractors": 1, "mask_min_ratio": 0.7, "eval_videos": 64},
             "date": "2026-11-27", "cores": 2}
  out = epath.Path(tmp_path) / "docs" / "ablations.md"
  assert rep.write(results, out)
  text = out.read_text()
  assert "| 1. MM-RoPE | reproduced |" in text
  assert "| 2. tube masking | inconclusive |" in text
  assert "| 3. rho_inf at inference | not reproduced |" in text
  assert "training 20.0 min (12 runs)" in text
  for png in ("claim1_loss_by_frame", "claim2_loss_by_frame", "claim2_adherence_by_frame",
              "claim3_adherence_by_frame", "claim3_path_offset_by_frame"):
    assert (out.parent / "ablations" / f"{png}.png").stat().length > 1000
  assert "frames 1 and later" in text and "the models do not follow" not in text
  # the same results with every adherence below chance: generations decide nothing
  for r in runs:
    for ev in r["evals"].values():
      for k in ("shape_acc", "color_acc", "direction_acc"):
        ev[k] /= 10
      ev["frames"] = {k: [x / 10 for x in v] for k, v in ev["frames"].items()}
  rep.write(results, out)
  text = out.read_text()
  assert "| 3. rho_inf at inference | inconclusive |" in text
  assert "no cell's later_frames_adherence lies above chance (0.188)" in text
  assert "| 1. MM-RoPE | reproduced |" in text  # the loss-based verdict stands
  results["missing_evaluations"] = ["mm-tube-1 at rho_inf 0.3"]
  assert not rep.write(results, out)
  assert "Missing evaluations: mm-tube-1 at rho_inf 0.3." in out.read_text()
  results["missing_evaluations"] = []
  runs[0]["status"] = "failed"
  assert not rep.write(results, out) and "Missing (not finished): 1d-tube-0" in out.read_text()


def test_a_failing_evaluation_is_reported_and_the_others_go_on(tmp_path, monkeypatch):
  import io
  import json
  import types

  from lumos_jax.synthetic import ablations, evaluate
  cfg = types.SimpleNamespace(model=types.SimpleNamespace(rope_variant="mm"),
                              data=types.SimpleNamespace(mask=types.SimpleNamespace(kind="tube")))
  run = types.SimpleNamespace(name="r", cfg=cfg)  # the claim-3 cell: evaluated at three rhos
  calls = []

  def fake_run(workdir, n, *args, out, history_mask, **kw):
    calls.append(history_mask)
    if history_mask == 0.3:
      raise RuntimeError("checkpoint unreadable")
    epath.Path(out).mkdir(parents=True, exist_ok=True)
    (epath.Path(out) / "scores.json").write_text(json.dumps({"settings": {"n": n}}))

  monkeypatch.setattr(evaluate, "run", lambda workdir, n, steps, scale, seed, out, **kw:
                      fake_run(workdir, n, out=out, **kw))
  log = io.StringIO()
  ablations.evaluate_runs(epath.Path(tmp_path), [run], 4, log=log)
  assert calls == [0.0, 0.3, 0.7]
  assert "FAILED (r at rho_inf 0.3): RuntimeError: checkpoint unreadable" in log.getvalue()
  assert [ablations._done(epath.Path(tmp_path), run, rho, 4) for rho in ablations.RHOS] == [
      True, False, True]
  calls.clear()  # a rerun retries only the failed one; another n redoes all
  ablations.evaluate_runs(epath.Path(tmp_path), [run], 4, log=log)
  assert calls == [0.3]
  calls.clear()
  ablations.evaluate_runs(epath.Path(tmp_path), [run], 8, log=log)
  assert calls == [0.0, 0.3, 0.7]


def test_ablation_config_trains_on_the_videos_its_report_was_measured_on():
  """The ablations keep the generator's 8 frames of 32 px with a distractor whatever the demo's
  geometry, and their seq_len and attention reach hold those videos (the pipeline would refuse
  every record otherwise); and the training settings of 2026-11-27, not the demo's since."""
  from lumos_jax import config, tokens
  cfg = config.load("configs/sweeps/ablations.py")
  video = synthetic.config_of_run(cfg)
  assert (video.frame_px, video.frames, video.distractors) == (32, 8, 1)
  assert synthetic.max_length(video) <= cfg.data.seq_len
  assert tokens.frame_block_length(video.grid, video.grid) - 1 <= cfg.model.max_lookahead
  # nor the demo's later training settings (bfloat16, background weighting, min_lr 1e-3)
  assert (cfg.model.dtype, cfg.data.background_weight, cfg.optim.min_lr) == ("float32", 1.0, 1e-4)
  config.validate(cfg, n_devices=1)
