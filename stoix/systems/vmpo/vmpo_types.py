"""Types of the V-MPO systems; the rollout and its learner state are the on-policy base's
(`ppo_types`)."""

from typing import NamedTuple

import jax

from stoix.base_types import OptState, Params


class DualParams(NamedTuple):
    """V-MPO's Lagrange multipliers, learned in log space: η = exp(log η), α = exp(log α)."""

    log_temperature: jax.Array  # () the E-step temperature η
    log_alpha: jax.Array  # [K] one per KL constraint: categorical K=1; Gaussian K=2 (mean, std)


class VMPOParams(NamedTuple):
    """The base's actor and critic (same field names, so its rollout reads them) plus the duals."""

    actor_params: Params
    critic_params: Params
    dual_params: DualParams


class VMPOOptStates(NamedTuple):
    actor_opt_state: OptState
    critic_opt_state: OptState
    dual_opt_state: OptState


class VMPOLossInfo(NamedTuple):
    actor_loss: jax.Array  # the M-step's weighted negative log-likelihood
    value_loss: jax.Array
    temperature_loss: jax.Array
    temperature: jax.Array  # η after projection
    alpha: jax.Array  # mean over the KL constraints' α after projection
    kl: jax.Array  # KL(rollout policy || current), summed over the decoupled parts
    entropy: jax.Array
