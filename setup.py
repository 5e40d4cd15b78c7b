"""lumos_jax: Lumos-1-style autoregressive video generation in JAX/Flax NNX.

Install for development with `pip install -r requirements.txt -e .` (exact pins for CI).
"""
import setuptools

setuptools.setup(
    name="lumos_jax",
    version="0.1.0",
    description="Lumos-1 (MM-RoPE, block-causal attention, AR-DF) in JAX/Flax NNX",
    packages=setuptools.find_packages(include=["lumos_jax", "lumos_jax.*"]),
    python_requires=">=3.11",
    install_requires=[
        "jax>=0.10.2", "flax>=0.12.8", "optax>=0.2.8", "orbax-checkpoint>=0.12.8",
        "grain>=0.2.18", "ml-collections>=1.1.0", "einops>=0.8.2", "numpy>=2.4",
        "absl-py>=2.5.1", "array-record", "msgpack", "pyyaml", "imageio>=2.38", "imageio-ffmpeg",
        "pillow",
    ],
    extras_require={"test": ["pytest>=9.2.0"]},
)
