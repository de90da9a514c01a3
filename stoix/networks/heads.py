"""Heads: map torso features to policies, values or action values."""

from typing import Sequence

import distrax
import flax.linen as nn
import jax
import jax.numpy as jnp

from stoix.networks.layers import orthogonal


class CategoricalHead(nn.Module):
    """A categorical policy; invalid actions (mask False) get zero probability."""

    action_dim: int

    @nn.compact
    def __call__(self, x: jax.Array, action_mask: jax.Array | None = None) -> distrax.Categorical:
        logits = nn.Dense(self.action_dim, kernel_init=orthogonal(0.01))(x)
        if action_mask is not None:
            logits = jnp.where(action_mask, logits, jnp.finfo(logits.dtype).min)
        return distrax.Categorical(logits=logits)


class NormalHead(nn.Module):
    """A diagonal Gaussian policy with a state-independent learned log standard deviation.

    Actions are not squashed: the env adapter's bounds are enforced by clipping in the system's
    act function, so log-probabilities stay exact and the entropy has a closed form.
    """

    action_dim: int
    init_log_std: float = 0.0

    @nn.compact
    def __call__(
        self, x: jax.Array, action_mask: jax.Array | None = None
    ) -> distrax.MultivariateNormalDiag:
        del action_mask
        loc = nn.Dense(self.action_dim, kernel_init=orthogonal(0.01))(x)
        log_std = self.param(
            "log_std", nn.initializers.constant(self.init_log_std), (self.action_dim,)
        )
        scale = jnp.broadcast_to(jnp.exp(log_std), loc.shape)
        return distrax.MultivariateNormalDiag(loc=loc, scale_diag=scale)


class TanhNormalHead(nn.Module):
    """A Gaussian squashed by tanh and rescaled to the action bounds (state-dependent scale)."""

    action_dim: int
    minimum: Sequence[float] = (-1.0,)
    maximum: Sequence[float] = (1.0,)
    min_scale: float = 1e-3

    @nn.compact
    def __call__(self, x: jax.Array, action_mask: jax.Array | None = None) -> distrax.Distribution:
        del action_mask
        loc = nn.Dense(self.action_dim, kernel_init=orthogonal(0.01))(x)
        scale = jax.nn.softplus(nn.Dense(self.action_dim, kernel_init=orthogonal(0.01))(x))
        base = distrax.MultivariateNormalDiag(loc=loc, scale_diag=scale + self.min_scale)
        low = jnp.asarray(self.minimum, jnp.float32)
        high = jnp.asarray(self.maximum, jnp.float32)
        bijector = distrax.Chain(
            [
                distrax.Block(
                    distrax.ScalarAffine(shift=(high + low) / 2, scale=(high - low) / 2), 1
                ),
                distrax.Block(distrax.Tanh(), 1),
            ]
        )
        return distrax.Transformed(base, bijector)


class ScalarCriticHead(nn.Module):
    """A state value V(s)."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return nn.Dense(1, kernel_init=orthogonal(1.0))(x).squeeze(-1)


class DiscreteQHead(nn.Module):
    """Action values Q(s, ·) for discrete actions."""

    action_dim: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return nn.Dense(self.action_dim, kernel_init=orthogonal(1.0))(x)
