"""IMPALA's V-trace losses (Espeholt et al., 2018) over host-env rollouts, as pure functions."""

from typing import Any, NamedTuple, Tuple

import jax
import jax.numpy as jnp
import rlax

from stoix.utils.minibatches import masked_mean


class VTraceInputs(NamedTuple):
    """One batch of env sequences, time-major [T, N] ([T + 1, N] for `values`)."""

    values: jax.Array  # V(s_0..s_T) under the learner's critic; s_T bootstraps the last step
    log_prob: jax.Array  # log π(a_t|s_t) under the learner's policy
    behaviour_log_prob: jax.Array  # log μ(a_t|s_t) under the actor's (older) policy
    reward: jax.Array
    terminated: jax.Array  # bool; no bootstrap
    valid: jax.Array  # bool; False on steps that only reset the env


class VTraceLosses(NamedTuple):
    policy_loss: jax.Array
    value_loss: jax.Array
    mean_rho: jax.Array  # mean importance ratio π/μ over the kept steps: the policy lag's cost


def vtrace_per_step(
    inputs: VTraceInputs,
    gamma: float,
    vtrace_lambda: float,
    clip_rho_threshold: float,
    clip_pg_rho_threshold: float,
) -> Tuple[Any, jax.Array]:
    """V-trace's value errors and policy-gradient advantages per step ([T, N] each), and the
    importance weights, with env-reset steps cut out.

    A reset step gets importance weight 0 and discount 0: its own correction is then 0 and it
    passes none back, so the step before it (an episode's end) bootstraps from the episode's
    final observation alone, as a truncation must, and a termination's discount 0 cuts the
    rest. rlax's `sample_mask` would instead carry the later correction through the reset.
    """
    valid = inputs.valid
    rho = jnp.where(
        valid, jnp.exp(jax.lax.stop_gradient(inputs.log_prob) - inputs.behaviour_log_prob), 0.0
    )
    discount = jnp.where(valid, gamma * (1.0 - inputs.terminated.astype(jnp.float32)), 0.0)
    vtrace = jax.vmap(
        lambda v_tm1, v_t, r_t, d_t, rho_tm1: rlax.vtrace_td_error_and_advantage(
            v_tm1,
            v_t,
            r_t,
            d_t,
            rho_tm1,
            lambda_=vtrace_lambda,
            clip_rho_threshold=clip_rho_threshold,
            clip_pg_rho_threshold=clip_pg_rho_threshold,
        ),
        in_axes=1,
        out_axes=1,
    )(inputs.values[:-1], inputs.values[1:], inputs.reward, discount, rho)
    return vtrace, rho


def vtrace_losses(
    inputs: VTraceInputs,
    gamma: float,
    vtrace_lambda: float,
    clip_rho_threshold: float,
    clip_pg_rho_threshold: float,
) -> VTraceLosses:
    """The policy-gradient and value losses of V-trace, means over the kept steps."""
    vtrace, rho = vtrace_per_step(
        inputs, gamma, vtrace_lambda, clip_rho_threshold, clip_pg_rho_threshold
    )
    valid = inputs.valid
    advantage = jax.lax.stop_gradient(vtrace.pg_advantage)
    return VTraceLosses(
        policy_loss=-masked_mean(inputs.log_prob * advantage, valid),
        value_loss=0.5 * masked_mean(jnp.square(vtrace.errors), valid),
        mean_rho=masked_mean(rho, valid),
    )
