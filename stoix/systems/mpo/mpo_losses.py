"""MPO's loss terms (Abdolmaleki et al., 2018) as pure functions, unit-tested on their own.

The E-step (weights over actions and the temperature's dual) and the M-step (weighted
likelihood under KL trust regions, with their multipliers' duals) are rlax's `mpo_loss`; this
module only feeds it: all actions with their target-policy probabilities for a categorical
policy, decoupled mean / standard-deviation constraints for a Gaussian one.
"""

from typing import NamedTuple, Tuple

import distrax
import jax
import jax.numpy as jnp
import rlax

from stoix.systems.mpo.mpo_types import DualParams

# Duals are log-parameters; this projection makes the multipliers positive (as Acme's MPO).
DUAL_FLOOR = 1e-8
# Floor of log π_target(a|s) in the discrete E-step: keeps masked actions (log-probability
# ≈ float32 min) finite when multiplied by the temperature; e^-1000 is zero anyway.
LOG_PROB_FLOOR = -1e3


def positive(x: jax.Array) -> jax.Array:
    """The projection of a dual log-parameter onto a positive multiplier."""
    return jax.nn.softplus(x) + DUAL_FLOOR


class MPOEpsilons(NamedTuple):
    """KL bounds of MPO's constraints."""

    temperature: float  # ε of the E-step: KL between the improved and the target policy
    mean: float  # categorical policy: the bound of its one KL; Gaussian: per-dimension mean KL
    stddev: float  # Gaussian only: per-dimension standard-deviation KL


class PolicyLossInfo(NamedTuple):
    policy_loss: jax.Array  # () mean −Σ w log π
    temperature: jax.Array  # () η
    kl: jax.Array  # () mean KL summed over constraints (and action dimensions)
    alpha: jax.Array  # () mean multiplier of the M-step constraints


def categorical_expected_value(logits: jax.Array, q_values: jax.Array) -> jax.Array:
    """E_{a∼softmax(logits)} Q(s, a) [B]: the exact bootstrap value of a categorical policy.

    Masked actions have probability 0 and a finite Q (`INVALID_ACTION_VALUE`), so they add 0.
    """
    return jnp.sum(jax.nn.softmax(logits, axis=-1) * q_values, axis=-1)


def categorical_mpo_loss(
    online_logits: jax.Array,
    target_logits: jax.Array,
    q_values: jax.Array,
    duals: DualParams,
    epsilons: MPOEpsilons,
) -> Tuple[jax.Array, PolicyLossInfo]:
    """MPO for a categorical policy, every action enumerated (no sampling).

    The improved policy is q(a|s) ∝ π_target(a|s) exp(Q(s, a)/η). rlax weights its "samples"
    by softmax(Q/η) as if they were drawn from π_target; here each action is a sample, so its
    Q is shifted by η·log π_target(a|s) (softmax((Q + η log π)/η) = the weights above), and the
    bound is raised by log A, which cancels the −log(number of samples) term of rlax's dual:
    the temperature loss becomes η ε + η log Σ_a π_target(a|s) e^{Q(s,a)/η}, Acme's categorical
    MPO dual. The M-step's KL(π_target ‖ π) is the categorical one.

    Args:
        online_logits, target_logits: [B, A] policy logits (masked actions ≈ float32 min).
        q_values: [B, A] the target critic's Q(s, ·); gradients are stopped.
        duals: `log_alpha` of shape [1, 1].

    Returns:
        The mean loss (policy, KL penalty and both duals' losses) and its parts.
    """
    num_actions = q_values.shape[-1]
    temperature = positive(duals.log_temperature)
    log_prior = jnp.maximum(jax.nn.log_softmax(target_logits, axis=-1), LOG_PROB_FLOOR)
    shifted_q = jax.lax.stop_gradient(q_values) + temperature * log_prior
    kl = distrax.Categorical(logits=target_logits).kl_divergence(
        distrax.Categorical(logits=online_logits)
    )
    loss, out = rlax.mpo_loss(
        sample_log_probs=jax.nn.log_softmax(online_logits, axis=-1),
        sample_q_values=shifted_q,
        temperature_constraint=rlax.LagrangePenalty(
            duals.log_temperature, epsilons.temperature + jnp.log(num_actions)
        ),
        kl_constraints=[(kl, rlax.LagrangePenalty(duals.log_alpha[0, 0], epsilons.mean))],
        projection_operator=positive,
        sample_axis=-1,
    )
    info = PolicyLossInfo(
        jnp.mean(out.policy_loss),
        temperature,
        jnp.mean(kl),
        positive(duals.log_alpha[0, 0]),
    )
    return jnp.mean(loss), info


def gaussian_mpo_loss(
    online_mean: jax.Array,
    online_stddev: jax.Array,
    target_mean: jax.Array,
    target_stddev: jax.Array,
    actions: jax.Array,
    q_values: jax.Array,
    duals: DualParams,
    epsilons: MPOEpsilons,
) -> Tuple[jax.Array, PolicyLossInfo]:
    """MPO for a diagonal Gaussian policy with decoupled KL constraints (the paper's §4.2).

    The M-step fits two policies to the E-step's weights: π_μ = N(μ_online, σ_target) learns
    the mean and π_σ = N(μ_target, σ_online) the standard deviation, each under its own
    per-dimension KL bound from π_target, so the covariance cannot collapse to chase the mean.

    Args:
        online_mean, online_stddev, target_mean, target_stddev: [B, A].
        actions: [N, B, A] samples from π_target.
        q_values: [N, B] the target critic's Q of those samples; gradients are stopped.
        duals: `log_alpha` of shape [2, A] (mean row, standard-deviation row).
    """
    fixed_stddev = distrax.Normal(online_mean, target_stddev)
    fixed_mean = distrax.Normal(target_mean, online_stddev)
    target = distrax.Normal(target_mean, target_stddev)
    log_probs = jnp.sum(fixed_stddev.log_prob(actions) + fixed_mean.log_prob(actions), axis=-1)
    kl_mean = target.kl_divergence(fixed_stddev)  # [B, A]
    kl_stddev = target.kl_divergence(fixed_mean)  # [B, A]
    loss, out = rlax.mpo_loss(
        sample_log_probs=log_probs,
        sample_q_values=jax.lax.stop_gradient(q_values),
        temperature_constraint=rlax.LagrangePenalty(
            duals.log_temperature, jnp.asarray(epsilons.temperature)
        ),
        kl_constraints=[
            (kl_mean, rlax.LagrangePenalty(duals.log_alpha[0], epsilons.mean, True)),
            (kl_stddev, rlax.LagrangePenalty(duals.log_alpha[1], epsilons.stddev, True)),
        ],
        projection_operator=positive,
        sample_axis=0,
    )
    info = PolicyLossInfo(
        jnp.mean(out.policy_loss),
        positive(duals.log_temperature),
        jnp.mean(jnp.sum(kl_mean + kl_stddev, axis=-1)),
        jnp.mean(positive(duals.log_alpha)),
    )
    return jnp.mean(loss), info
