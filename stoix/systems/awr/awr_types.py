"""Types of the AWR systems (discrete and continuous)."""

from typing import NamedTuple

import jax


class AWRLossInfo(NamedTuple):
    critic_loss: jax.Array  # mean squared error to the TD(λ) targets
    actor_loss: jax.Array  # −mean w · log π(a|s)
    value_mean: jax.Array  # mean V(s)
    advantage_mean: jax.Array  # mean TD(λ) advantage (before any standardisation)
    weight_mean: jax.Array  # mean advantage weight
    weight_clip_fraction: jax.Array  # fraction of weights clipped at system.max_weight
