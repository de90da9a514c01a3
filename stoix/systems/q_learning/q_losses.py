"""Per-sample losses of the Q-learning family, on network outputs (no networks in here).

Every function is batched over a leading axis B and returns `(loss [B], priority [B])`; the
system averages the loss with importance weights and hands the priority to a prioritised
buffer. Targets come from rlax where it has them; `munchausen_td` is written here because
rlax has no Munchausen Q-learning. The discount passed in already holds γ^k and the
termination mask (see `stoix.utils.multistep.n_step_target`).
"""

from typing import Tuple

import jax
import jax.numpy as jnp
import rlax

LossAndPriority = Tuple[jax.Array, jax.Array]


def td_loss(td: jax.Array, huber_delta: float) -> jax.Array:
    """Huber loss of the TD error, or half its square when `huber_delta` is 0."""
    if huber_delta > 0:
        return rlax.huber_loss(td, huber_delta)
    return 0.5 * jnp.square(td)


def q_learning(
    q_tm1: jax.Array,
    a_tm1: jax.Array,
    r_t: jax.Array,
    discount_t: jax.Array,
    q_t: jax.Array,
    huber_delta: float,
) -> LossAndPriority:
    """DQN: bootstrap from max_a Q_target(s', a)."""
    td = jax.vmap(rlax.q_learning)(q_tm1, a_tm1, r_t, discount_t, q_t)
    return td_loss(td, huber_delta), jnp.abs(td)


def double_q_learning(
    q_tm1: jax.Array,
    a_tm1: jax.Array,
    r_t: jax.Array,
    discount_t: jax.Array,
    q_t_value: jax.Array,
    q_t_selector: jax.Array,
    huber_delta: float,
) -> LossAndPriority:
    """Double DQN: the online network picks the next action, the target network values it."""
    td = jax.vmap(rlax.double_q_learning)(q_tm1, a_tm1, r_t, discount_t, q_t_value, q_t_selector)
    return td_loss(td, huber_delta), jnp.abs(td)


def regularised_q_learning(
    q_tm1: jax.Array,
    a_tm1: jax.Array,
    r_t: jax.Array,
    discount_t: jax.Array,
    q_t: jax.Array,
    regularisation: float,
) -> LossAndPriority:
    """DQN-Reg (Co-Reyes et al., 2021): squared TD error plus a linear penalty on Q(s, a).

    The penalty pushes all chosen-action values down, which counters the overestimation that
    max-based bootstrapping builds up.
    """
    td = jax.vmap(rlax.q_learning)(q_tm1, a_tm1, r_t, discount_t, q_t)
    q_sa = jnp.take_along_axis(q_tm1, a_tm1[:, None], axis=-1)[:, 0]
    return 0.5 * jnp.square(td) + regularisation * q_sa, jnp.abs(td)


def munchausen_td(
    q_tm1: jax.Array,
    q_tm1_target: jax.Array,
    a_tm1: jax.Array,
    r_t: jax.Array,
    discount_t: jax.Array,
    q_t_target: jax.Array,
    temperature: float,
    munchausen_coefficient: float,
    log_policy_clip: float,
) -> jax.Array:
    """Munchausen-DQN TD error (Vieillard et al., 2020).

    target = r + α τ clip(log π(a|s), l₀, 0)
             + discount · Σ_a' π(a'|s') (Q(s', a') − τ log π(a'|s')),
    with π = softmax(Q_target / τ) at both states.
    """
    log_pi_tm1 = jax.nn.log_softmax(q_tm1_target / temperature, axis=-1)
    log_pi_a = jnp.take_along_axis(log_pi_tm1, a_tm1[:, None], axis=-1)[:, 0]
    bonus = munchausen_coefficient * temperature * jnp.clip(log_pi_a, log_policy_clip, 0.0)
    log_pi_t = jax.nn.log_softmax(q_t_target / temperature, axis=-1)
    soft_value_t = jnp.sum(jnp.exp(log_pi_t) * (q_t_target - temperature * log_pi_t), axis=-1)
    target = jax.lax.stop_gradient(r_t + bonus + discount_t * soft_value_t)
    q_sa = jnp.take_along_axis(q_tm1, a_tm1[:, None], axis=-1)[:, 0]
    return target - q_sa


def munchausen_q_learning(
    q_tm1: jax.Array,
    q_tm1_target: jax.Array,
    a_tm1: jax.Array,
    r_t: jax.Array,
    discount_t: jax.Array,
    q_t_target: jax.Array,
    temperature: float,
    munchausen_coefficient: float,
    log_policy_clip: float,
    huber_delta: float,
) -> LossAndPriority:
    td = munchausen_td(
        q_tm1,
        q_tm1_target,
        a_tm1,
        r_t,
        discount_t,
        q_t_target,
        temperature,
        munchausen_coefficient,
        log_policy_clip,
    )
    return td_loss(td, huber_delta), jnp.abs(td)


def categorical_q_learning(
    logits_tm1: jax.Array,
    atoms: jax.Array,
    a_tm1: jax.Array,
    r_t: jax.Array,
    discount_t: jax.Array,
    logits_t: jax.Array,
    q_t_selector: jax.Array,
) -> LossAndPriority:
    """C51: cross-entropy to the projected target distribution of the selected next action.

    The selector's argmax picks the next action: the target network's own values give C51, the
    online network's give the double-Q variant that Rainbow uses. The loss is also the priority,
    as in Rainbow.
    """
    loss = jax.vmap(rlax.categorical_double_q_learning, in_axes=(None, 0, 0, 0, 0, None, 0, 0))(
        atoms, logits_tm1, a_tm1, r_t, discount_t, atoms, logits_t, q_t_selector
    )
    return loss, loss


def quantile_q_learning(
    quantiles_tm1: jax.Array,
    a_tm1: jax.Array,
    r_t: jax.Array,
    discount_t: jax.Array,
    quantiles_t: jax.Array,
    q_t_selector: jax.Array,
    huber_delta: float,
) -> LossAndPriority:
    """QR-DQN (Dabney et al., 2018): quantile Huber regression toward the next quantiles.

    Quantiles come head-shaped [B, A, N]; rlax wants [N, A]. The selector's argmax picks the
    next action (mean of the target quantiles for QR-DQN).
    """
    num_quantiles = quantiles_tm1.shape[-1]
    taus = (jnp.arange(num_quantiles, dtype=quantiles_tm1.dtype) + 0.5) / num_quantiles
    dist_tm1 = jnp.swapaxes(quantiles_tm1, -1, -2)
    dist_t = jnp.swapaxes(quantiles_t, -1, -2)
    # rlax picks the next action by the argmax of the selector's mean over its quantile axis.
    selector = jnp.broadcast_to(q_t_selector[:, None, :], dist_t.shape)
    loss = jax.vmap(
        lambda d_tm1, a, r, d, s, d_t: rlax.quantile_q_learning(
            d_tm1, taus, a, r, d, s, d_t, huber_param=huber_delta
        )
    )(dist_tm1, a_tm1, r_t, discount_t, selector, dist_t)
    return loss, loss
