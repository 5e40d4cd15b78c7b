# Source of notebooks/inspect_run.ipynb (jupytext "percent" format): edit this file, then run
# `python notebooks/build.py` to regenerate the notebook (tests/unit/test_inspect.py checks they
# agree). The helpers live in lumos_jax/inspect.py; the cells only call them and display.

# %% [markdown]
# # Inspecting a Lumos run
#
# Given a training workdir (`python -m lumos_jax.train --config=... --workdir=WORKDIR`), this
# notebook shows, without importing the trainer:
#
# 1. the run's config and its checkpoints on disk (steps, items, sizes, array shapes from the
#    orbax metadata: nothing restored);
# 2. the parameters restored alone (no optimizer state) over every device there is: names,
#    shapes, dtypes, shardings, norms;
# 3. the MM-RoPE frequency-to-axis allocation beside 1-D and contiguous 3-D RoPE;
# 4. the block-causal attention pattern of a sample;
# 5. the training loss and the per-frame eval loss from `metrics.jsonl`;
# 6. a generated video (runs on the embedded synthetic dataset decode it to pixels).
#
# Set `WORKDIR` in the parameter cell below (or the environment variable `LUMOS_WORKDIR`).

# %%
# %matplotlib inline
import os

import jax
from IPython.display import Image, display

from lumos_jax import config as config_lib, inspect, tokens

# %% tags=["parameters"]
WORKDIR = os.environ.get("LUMOS_WORKDIR", "/tmp/lumos_demo")
PROMPT = os.environ.get("LUMOS_PROMPT", "a red circle moves left")
SAMPLE_STEPS = int(os.environ.get("LUMOS_SAMPLE_STEPS", "16"))  # masked-decoding steps per frame
GUIDANCE = 1.5  # with TOP_K and CODE_BIAS: how launch/demo.sh samples the demo (README "Demo run")
TOP_K = 1  # 0: no top-k filtering
CODE_BIAS = "0:0.6"  # the synthetic empty patch (code 0) e^0.6 times likelier; "" for other runs

# %% [markdown]
# ## The run on disk
# The config the run was trained with (`WORKDIR/config.json`), then each finished checkpoint
# step with its items (`params`, `train_state`, `data`) and their size on disk.

# %%
print(jax.devices())
cfg = config_lib.load_run(WORKDIR)
print(cfg)

# %%
print(inspect.table(inspect.checkpoint_items(WORKDIR)))

# %% [markdown]
# Shapes and dtypes of the latest step's saved arrays, read from orbax's metadata alone.

# %%
print(inspect.table(inspect.checkpoint_arrays(WORKDIR, item="params")))

# %%
print(inspect.table(inspect.checkpoint_arrays(WORKDIR, item="train_state")))

# %% [markdown]
# ## Parameters
# Restored alone (as `lumos_jax.sample.load` does), sharded over every device by the logical-axis
# rules on a (1, devices, 1) mesh; `shard` is the per-device shape.

# %%
loaded = inspect.load(WORKDIR)
sampler = loaded[0]
print(inspect.table(inspect.parameter_rows(sampler.params)))

# %% [markdown]
# ## MM-RoPE
# Which position axis (t, h, w) drives each rotary frequency. MM-RoPE spreads every axis over the
# whole spectrum (4 t, 6 h, 6 w in each meta-group of 16); the contiguous 3-D split gives time
# only the highest frequencies; 1-D RoPE reads the token index everywhere.

# %%
inspect.plot_rope(cfg.model.head_dim, cfg.model.rope_theta)

# %% [markdown]
# ## Block-causal attention
# A sample of the embedded dataset in the official layout: text is causal, every token of a frame
# block (IMAGE_START .. IMAGE_END) sees its whole block and everything before it.

# %%
ids, sample_vocab, caption = inspect.synthetic_sample(cfg)
layout = tokens.parse(ids, sample_vocab, strides=tuple(cfg.data.strides))
inspect.plot_attention(layout, title=caption)

# %% [markdown]
# ## Losses
# Training loss per logged step and, where the run evaluated (`eval_every`), the validation loss
# per frame.

# %%
train_rows, eval_rows = inspect.read_metrics(WORKDIR)
inspect.plot_losses(train_rows, eval_rows)

# %% [markdown]
# ## A generated video
# Text-to-video with the run's frame count, `SAMPLE_STEPS` decoding steps per frame and
# classifier-free guidance `GUIDANCE`, top-k filtering `TOP_K` and the logit bias `CODE_BIAS`.

# %%
codes, frames = inspect.sample_video(loaded, PROMPT, steps=SAMPLE_STEPS, guidance=GUIDANCE,
                                     top_k=TOP_K, code_bias=CODE_BIAS)
print(codes.shape)
inspect.plot_frames(frames, PROMPT)

# %%
display(Image(data=inspect.gif(frames, PROMPT), format="gif"))
