"""Small building blocks shared by torsos and heads."""

from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": nn.relu,
    "tanh": jnp.tanh,
    "elu": nn.elu,
    "gelu": nn.gelu,
    "silu": nn.silu,
    "leaky_relu": nn.leaky_relu,
    "sigmoid": nn.sigmoid,
}


def activation_fn(name: str) -> Callable[[jax.Array], jax.Array]:
    """Looks an activation up by its config name."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation '{name}'; choose one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def orthogonal(scale: float = 2.0**0.5) -> nn.initializers.Initializer:
    return nn.initializers.orthogonal(scale)
