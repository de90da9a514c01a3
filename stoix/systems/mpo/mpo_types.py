"""Types of the MPO systems (discrete and continuous)."""

from typing import NamedTuple

import jax

from stoix.base_types import OnlineAndTarget, OptState


class DualParams(NamedTuple):
    """MPO's Lagrange multipliers as unconstrained log-parameters (projected by softplus)."""

    log_temperature: jax.Array  # () η of the E-step's KL constraint
    # [K, D]: one row per M-step KL constraint. Discrete: [1, 1], the categorical KL's.
    # Continuous: [2, A], the mean's and the standard deviation's, one per action dimension.
    log_alpha: jax.Array


class MPOParams(NamedTuple):
    actor: OnlineAndTarget
    critic: OnlineAndTarget  # discrete: Q(s, ·) network; continuous: Q(s, a) network
    duals: DualParams


class MPOOptStates(NamedTuple):
    actor: OptState
    critic: OptState
    duals: OptState


class MPOLossInfo(NamedTuple):
    critic_loss: jax.Array  # mean squared TD error
    q_mean: jax.Array  # mean Q(s_t, a_t) of the online critic
    policy_loss: jax.Array  # −Σ_a w(a) log π(a|s), the M-step's weighted likelihood
    temperature: jax.Array  # η
    kl: jax.Array  # mean KL(π_target ‖ π) summed over constraints (continuous: mean and std)
    alpha: jax.Array  # mean M-step multiplier
