"""The embedded demo: procedural shape videos with captions, their exact patch tokenizer, caption
adherence scoring, GIF/MP4 writing and the `python -m lumos_jax.synthetic.evaluate` command.

  dataset.py    SyntheticConfig, generate(seed, index), captions, records, write(dir, ...)
  tokenizer.py  PatchTokenizer (121 codes, exact round trip) and the colour palette
  score.py      scoring a generated video against its caption
  video.py      captioned GIF / MP4 writing, sample sheets
  evaluate.py   caption adherence of a trained run, with baselines
"""
