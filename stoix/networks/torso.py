"""Torsos: the shared feature extractors that heads sit on, chosen in `network=` configs."""

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from stoix.networks.layers import NoisyDense, activation_fn, orthogonal


class MLPTorso(nn.Module):
    """Dense layers, each optionally followed by LayerNorm or BatchNorm, then the activation.

    BatchNorm normalises with the batch's statistics when called with ``train=True`` (the
    caller must then apply with ``mutable=["batch_stats"]``) and with its running averages
    otherwise; only systems that update those statistics (`ff_pqn`) accept it.

    With ``noisy=True`` the layers are `NoisyDense` (NoisyNets exploration, e.g. Rainbow): they
    keep the NoisyNets initialisation, so ``kernel_scale`` applies to plain layers only.
    """

    layer_sizes: Sequence[int] = (256, 256)
    activation: str = "relu"
    use_layer_norm: bool = False
    kernel_scale: float = 2.0**0.5
    noisy: bool = False
    use_batch_norm: bool = False
    # LayerNorm on the raw input too: wide, sparse observations (Craftax's 1,345 symbols) reach
    # the first layer at a scale no other input has.
    normalise_input: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        if self.use_layer_norm and self.use_batch_norm:
            raise ValueError("MLPTorso: choose use_layer_norm or use_batch_norm, not both")
        x = x.reshape(x.shape[: x.ndim - 1] + (-1,)) if x.ndim > 1 else x
        if self.normalise_input:
            x = nn.LayerNorm()(x)
        act = activation_fn(self.activation)
        for size in self.layer_sizes:
            if self.noisy:
                x = NoisyDense(size)(x)
            else:
                x = nn.Dense(size, kernel_init=orthogonal(self.kernel_scale))(x)
            if self.use_layer_norm:
                x = nn.LayerNorm()(x)
            if self.use_batch_norm:
                x = nn.BatchNorm(use_running_average=not train)(x)
            x = act(x)
        return x


class FlattenMLPTorso(nn.Module):
    """MLPTorso for observations with several trailing axes (images, boards): flattens them."""

    layer_sizes: Sequence[int] = (256, 256)
    activation: str = "relu"
    use_layer_norm: bool = False
    observation_ndim: int = 1
    noisy: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        batch_shape = x.shape[: x.ndim - self.observation_ndim]
        x = x.reshape(batch_shape + (-1,))
        return MLPTorso(self.layer_sizes, self.activation, self.use_layer_norm, noisy=self.noisy)(x)


class CNNTorso(nn.Module):
    """Convolutions over (..., H, W, C) images, then dense layers.

    Sized for small grids such as MinAtar (10x10) and jumanji boards; image envs with large
    frames want strides > 1. ``noisy`` makes the dense layers (not the convolutions) NoisyDense.
    """

    channel_sizes: Sequence[int] = (16,)
    kernel_sizes: Sequence[int] = (3,)
    strides: Sequence[int] = (1,)
    hidden_sizes: Sequence[int] = (128,)
    activation: str = "relu"
    use_layer_norm: bool = False
    noisy: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        act = activation_fn(self.activation)
        batch_shape = x.shape[:-3]
        x = x.reshape((-1,) + x.shape[-3:])
        layers = zip(self.channel_sizes, self.kernel_sizes, self.strides, strict=True)
        for channels, kernel, stride in layers:
            x = nn.Conv(channels, (kernel, kernel), (stride, stride), kernel_init=orthogonal())(x)
            if self.use_layer_norm:
                x = nn.LayerNorm(reduction_axes=(-3, -2, -1))(x)
            x = act(x)
        x = x.reshape(batch_shape + (-1,))
        return MLPTorso(self.hidden_sizes, self.activation, self.use_layer_norm, noisy=self.noisy)(
            x
        )


class IdentityTorso(nn.Module):
    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return jnp.asarray(x, jnp.float32)
