"""Heads: map torso features to policies, values or action values."""

from typing import NamedTuple, Sequence, Union

import distrax
import flax.linen as nn
import jax
import jax.numpy as jnp

from stoix.networks.layers import NoisyDense, orthogonal


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


class CategoricalValueHead(nn.Module):
    """Logits [..., num_atoms] of a value distribution over fixed atoms (D4PG's critic); the
    system owns the atoms, so the same head serves any value range."""

    num_atoms: int = 51

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return nn.Dense(self.num_atoms, kernel_init=orthogonal(1.0))(x)


class DiscreteQHead(nn.Module):
    """Action values Q(s, ·) for discrete actions, unmasked; `QHead` is the configurable one."""

    action_dim: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return nn.Dense(self.action_dim, kernel_init=orthogonal(1.0))(x)


# Q-value given to actions the mask forbids. Finite on purpose: losses multiply the next state's
# values by a zero discount and divide them by temperatures, and -inf would turn those into NaN.
INVALID_ACTION_VALUE = -1e9


class QValues(NamedTuple):
    """Output of `QHead`."""

    q_values: jax.Array  # [..., A]; INVALID_ACTION_VALUE where the action mask is False


class CategoricalQValues(NamedTuple):
    """Output of `CategoricalQHead` (C51): a distribution over a fixed support per action."""

    q_values: jax.Array  # [..., A] expectation under the distribution; masked like QValues
    logits: jax.Array  # [..., A, num_atoms] unmasked
    atoms: jax.Array  # [num_atoms] the support, shared by every batch element (not batched)


class QuantileQValues(NamedTuple):
    """Output of `QuantileQHead` (QR-DQN): quantiles at midpoints (2i + 1) / (2 num_quantiles)."""

    q_values: jax.Array  # [..., A] mean of the quantiles; masked like QValues
    quantiles: jax.Array  # [..., A, num_quantiles] unmasked


QNetworkOutput = Union[QValues, CategoricalQValues, QuantileQValues]


def _dense(features: int, noisy: bool, name: str) -> nn.Module:
    """One output layer, noisy (NoisyNets) or plain."""
    if noisy:
        return NoisyDense(features, name=name)
    return nn.Dense(features, kernel_init=orthogonal(1.0), name=name)


def _mask_q_values(q_values: jax.Array, action_mask: jax.Array | None) -> jax.Array:
    if action_mask is None:
        return q_values
    return jnp.where(action_mask, q_values, INVALID_ACTION_VALUE)


def _per_action_outputs(
    x: jax.Array, action_dim: int, size: int, dueling: bool, noisy: bool, name: str
) -> jax.Array:
    """[..., A, size] outputs per action, optionally dueling: V + A - mean_a A per output.

    Subtracting the mean advantage makes V and A identifiable (Wang et al. 2016); for
    distributional heads it is done per atom or quantile, before any softmax.
    """
    batch_shape = x.shape[:-1]
    if not dueling:
        out = _dense(action_dim * size, noisy, name)(x)
        return out.reshape(batch_shape + (action_dim, size))
    value = _dense(size, noisy, "value")(x).reshape(batch_shape + (1, size))
    advantage = _dense(action_dim * size, noisy, "advantage")(x)
    advantage = advantage.reshape(batch_shape + (action_dim, size))
    return value + advantage - advantage.mean(axis=-2, keepdims=True)


class QHead(nn.Module):
    """Action values Q(s, ·), plain or dueling.

    Attributes:
        action_dim: Number of discrete actions (filled in by `make_q_network`).
        dueling: Q = V(s) + A(s, ·) - mean_a A(s, a), from one value and one advantage layer.
        noisy: Use `NoisyDense` layers (NoisyNets exploration).
    """

    action_dim: int
    dueling: bool = False
    noisy: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, action_mask: jax.Array | None = None) -> QValues:
        """Computes Q-values.

        Args:
            x: Torso features, ``[..., F]``.
            action_mask: ``[..., A]`` booleans, False for actions that may not be taken.

        Returns:
            ``QValues`` with ``q_values`` ``[..., A]``, INVALID_ACTION_VALUE on masked actions.
        """
        q_values = _per_action_outputs(x, self.action_dim, 1, self.dueling, self.noisy, "q")
        return QValues(_mask_q_values(q_values[..., 0], action_mask))


class CategoricalQHead(nn.Module):
    """A distribution over returns per action on a fixed support (C51, Bellemare et al. 2017).

    Attributes:
        action_dim: Number of discrete actions (filled in by `make_q_network`).
        num_atoms: Number of support points.
        v_min: Smallest return on the support.
        v_max: Largest return on the support.
        dueling: Combine value and advantage logits as V + A - mean_a A per atom.
        noisy: Use `NoisyDense` layers (NoisyNets exploration).
    """

    action_dim: int
    num_atoms: int = 51
    v_min: float = -10.0
    v_max: float = 10.0
    dueling: bool = False
    noisy: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, action_mask: jax.Array | None = None) -> CategoricalQValues:
        """Computes return distributions and their means.

        Args:
            x: Torso features, ``[..., F]``.
            action_mask: ``[..., A]`` booleans, False for actions that may not be taken.

        Returns:
            ``CategoricalQValues``; only ``q_values`` is masked.

        Raises:
            ValueError: If the support is empty or has fewer than two atoms.
        """
        if self.num_atoms < 2 or not self.v_max > self.v_min:
            raise ValueError(
                f"CategoricalQHead needs num_atoms >= 2 and v_max > v_min, got "
                f"num_atoms={self.num_atoms}, v_min={self.v_min}, v_max={self.v_max}"
            )
        logits = _per_action_outputs(
            x, self.action_dim, self.num_atoms, self.dueling, self.noisy, "logits"
        )
        atoms = jnp.linspace(self.v_min, self.v_max, self.num_atoms, dtype=jnp.float32)
        q_values = jnp.sum(jax.nn.softmax(logits, axis=-1) * atoms, axis=-1)
        return CategoricalQValues(_mask_q_values(q_values, action_mask), logits, atoms)


class QuantileQHead(nn.Module):
    """Quantiles of the return per action (QR-DQN, Dabney et al. 2018).

    Attributes:
        action_dim: Number of discrete actions (filled in by `make_q_network`).
        num_quantiles: Number of quantiles per action.
        dueling: Combine value and advantage quantiles as V + A - mean_a A per quantile.
        noisy: Use `NoisyDense` layers (NoisyNets exploration).
    """

    action_dim: int
    num_quantiles: int = 51
    dueling: bool = False
    noisy: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, action_mask: jax.Array | None = None) -> QuantileQValues:
        """Computes return quantiles and their means.

        Args:
            x: Torso features, ``[..., F]``.
            action_mask: ``[..., A]`` booleans, False for actions that may not be taken.

        Returns:
            ``QuantileQValues``; only ``q_values`` is masked.
        """
        quantiles = _per_action_outputs(
            x, self.action_dim, self.num_quantiles, self.dueling, self.noisy, "quantiles"
        )
        q_values = quantiles.mean(axis=-1)
        return QuantileQValues(_mask_q_values(q_values, action_mask), quantiles)
