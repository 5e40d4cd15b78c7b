"""Loading a trained run for sampling: its config and just its parameters (no optimizer state, no
trainer), onto the devices given.

  sampler, cfg, vocab = loader.load("/tmp/lumos_demo")   # or lumos_jax.sample.load(...)
"""
import jax
from flax import nnx

from lumos_jax import checkpoint, config as config_lib, model as model_lib, sharding
from lumos_jax.sample.sampler import Sampler


def load(workdir, step: int | None = None, devices=None):
  """(Sampler with the checkpoint's parameters, training config, vocabulary) of a run.

  workdir: a local directory or an object-store URL (gs://bucket/run: config.json and the
  checkpoint are read through etils.epath, which keeps the scheme). step: the checkpoint (None: the
  latest). devices: where the parameters go (default: the first device), sharded over them by the
  logical-axis rules on a (1, len(devices), 1) mesh.
  """
  cfg = config_lib.load_run(workdir)
  model_cfg, vocab = config_lib.model_config(cfg), config_lib.vocab(cfg)
  devices = jax.devices()[:1] if devices is None else list(devices)
  mesh = sharding.make_mesh((1, -1, 1), devices=devices)
  graphdef, abstract_params = model_lib.abstract_model(model_cfg)
  param_sh = sharding.named_shardings(sharding.param_specs(abstract_params, mesh), mesh)
  params = checkpoint.restore_params(workdir, step,
                                     checkpoint.abstract_like(abstract_params, param_sh))
  model = nnx.merge(graphdef, params)
  return Sampler(model, vocab, strides=tuple(cfg.data.strides)), cfg, vocab


def synthetic_tokenizer(cfg):
  """The patch tokenizer (and, as `.cfg`, the video geometry) of a run on the synthetic dataset."""
  from lumos_jax.synthetic import dataset  # only synthetic runs have a built-in tokenizer
  return dataset.PatchTokenizer(dataset.config_of_run(cfg))
