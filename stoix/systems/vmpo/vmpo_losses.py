"""V-MPO's loss terms as pure functions, unit-tested on their own.

The E-step weights, the temperature loss and the KL penalties come from `rlax.vmpo_loss`; what
is here is what rlax leaves to the caller: the KLs to constrain and the dual parametrisation.
"""

from typing import NamedTuple, Sequence, Tuple

import distrax
import jax
import jax.numpy as jnp
import rlax

from stoix.systems.vmpo.vmpo_types import DualParams

MIN_DUAL = 1e-8  # floor of η and α after projection


def project_dual(log_value: jax.Array) -> jax.Array:
    """A dual variable from its log-space parameter: always positive, never below MIN_DUAL."""
    return jnp.maximum(jnp.exp(log_value), MIN_DUAL)


def decoupled_gaussian_kl(
    old_loc: jax.Array, old_scale: jax.Array, loc: jax.Array, scale: jax.Array
) -> Tuple[jax.Array, jax.Array]:
    """KL(old || new) of diagonal Gaussians, split into what the mean and the std move.

    As in MPO (Abdolmaleki et al., 2018) and V-MPO (Song et al., 2019, §4.2), each part holds
    the other at its old value, so each can get its own bound:

        mean: KL(N(μ_old, σ_old) || N(μ, σ_old)) = Σ_d (μ − μ_old)² / (2 σ_old²)
        std:  KL(N(μ_old, σ_old) || N(μ_old, σ)) = Σ_d log(σ/σ_old) + σ_old² / (2σ²) − 1/2

    Args:
        old_loc, old_scale, loc, scale: [..., A].

    Returns:
        (mean part, std part), each [...] (summed over the action dimensions).
    """
    kl_mean = jnp.sum(jnp.square(loc - old_loc) / (2.0 * jnp.square(old_scale)), axis=-1)
    kl_std = jnp.sum(
        jnp.log(scale / old_scale) + jnp.square(old_scale) / (2.0 * jnp.square(scale)) - 0.5,
        axis=-1,
    )
    return kl_mean, kl_std


def policy_kls(old: distrax.Distribution, new: distrax.Distribution) -> Tuple[jax.Array, ...]:
    """The KLs V-MPO constrains: the full KL for a categorical policy, the decoupled mean and
    std parts for a diagonal Gaussian (the base Gaussian of a tanh-squashed one)."""
    # MultivariateNormalDiag is itself a distrax.Transformed (of a standard normal), so it is
    # matched first; any other Transformed is a squashed Gaussian whose base is constrained.
    if not isinstance(old, distrax.MultivariateNormalDiag) and isinstance(old, distrax.Transformed):
        old, new = old.distribution, new.distribution  # type: ignore[attr-defined]
    if isinstance(old, distrax.MultivariateNormalDiag):
        return decoupled_gaussian_kl(old.loc, old.scale_diag, new.loc, new.scale_diag)
    return (old.kl_divergence(new),)


class VMPOStats(NamedTuple):
    policy_loss: jax.Array
    temperature_loss: jax.Array
    temperature: jax.Array
    alpha: jax.Array
    kl: jax.Array


def vmpo_policy_loss(
    log_prob: jax.Array,
    advantages: jax.Array,
    kls: Sequence[jax.Array],
    duals: DualParams,
    epsilon_temperature: float,
    epsilon_alpha: Sequence[float],
    top_k_fraction: float,
) -> Tuple[jax.Array, VMPOStats]:
    """V-MPO's policy and dual loss over one batch (Song et al., 2019, eq. 5–8), via rlax.

    E-step: the top `top_k_fraction` of the samples by advantage get weights ∝ exp(A/η), with
    η's dual loss keeping the weighted distribution within `epsilon_temperature` of the data.
    M-step: weighted log-likelihood of the actions, with each KL in `kls` (between the policy
    that collected the data and the current one) held under its bound by the matching α.

    Args:
        log_prob: [B] log π(a|s) of the current policy (gradients flow).
        advantages: [B] (treated as constants).
        kls: one [B] KL per constraint, in the order of `duals.log_alpha`.
        duals: the log-space multipliers (gradients flow to them through the dual losses).

    Returns:
        (scalar loss, statistics).
    """
    temperature_constraint = rlax.LagrangePenalty(
        alpha=duals.log_temperature, epsilon=jnp.asarray(epsilon_temperature, jnp.float32)
    )
    kl_constraints = [
        (kl, rlax.LagrangePenalty(alpha=duals.log_alpha[i], epsilon=jnp.float32(epsilon)))
        for i, (kl, epsilon) in enumerate(zip(kls, epsilon_alpha, strict=True))
    ]
    loss, out = rlax.vmpo_loss(
        sample_log_probs=log_prob,
        advantages=jax.lax.stop_gradient(advantages),
        temperature_constraint=temperature_constraint,
        kl_constraints=kl_constraints,
        projection_operator=project_dual,
        top_k_fraction=top_k_fraction,
    )
    stats = VMPOStats(
        policy_loss=jnp.mean(out.policy_loss),
        temperature_loss=jnp.mean(out.temperature_loss),
        temperature=project_dual(duals.log_temperature),
        alpha=jnp.mean(project_dual(duals.log_alpha)),
        kl=sum(jnp.mean(kl) for kl in kls),
    )
    return jnp.mean(loss), jax.tree.map(jax.lax.stop_gradient, stats)
