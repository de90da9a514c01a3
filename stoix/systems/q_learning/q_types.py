"""Types shared by the replay-based Q-learning systems."""

from typing import Any, NamedTuple

import jax

from stoix.base_types import EnvState, Observation, OnlineAndTarget, OptState, PRNGKey


class QTransition(NamedTuple):
    """One env step as stored in the replay buffer ([N, T] when added, [B, n] when sampled)."""

    observation: Observation
    action: jax.Array  # () int32
    reward: jax.Array  # () float32
    terminated: jax.Array  # () bool: no bootstrap from next_observation
    episode_end: jax.Array  # () bool: terminated or truncated; n-step sums stop here
    next_observation: Observation  # the true next observation, also at a truncation


class QLearnerState(NamedTuple):
    """One replica's learner state; leaves gain [D, S, B] axes in the runner."""

    params: OnlineAndTarget
    opt_state: OptState
    buffer_state: Any  # flashbax trajectory buffer state (uniform or prioritised)
    key: PRNGKey
    env_state: EnvState  # [N]
    observation: Observation  # [N] what the next rollout acts on first
    env_steps: jax.Array  # () int32, env steps taken by this replica (drives ε)
    gradient_steps: jax.Array  # () int32 (drives hard target updates and β annealing)


class QBatch(NamedTuple):
    """A sampled batch folded into n-step transitions (see `multistep.n_step_target`)."""

    observation: Observation  # [B] s_t
    action: jax.Array  # [B] a_t
    reward: jax.Array  # [B] discounted reward sum over the k ≤ n steps
    discount: jax.Array  # [B] γ^k, 0 when the episode terminated within them
    next_observation: Observation  # [B] s_{t+k}


class QForward(NamedTuple):
    """Every network output a Q-learning loss may need; XLA drops the passes a loss ignores.

    Each field is a head output (`QValues`, `CategoricalQValues` or `QuantileQValues`).
    """

    online_tm1: Any  # online params at s_t: the only pass that carries gradients
    online_t: Any  # online params at s_{t+k}: action selection for double Q-learning
    target_tm1: Any  # target params at s_t: the Munchausen log-policy
    target_t: Any  # target params at s_{t+k}: the bootstrap values


class QLossInfo(NamedTuple):
    loss: jax.Array
    q_mean: jax.Array  # mean Q(s_t, a_t) of the online network
    priority_mean: jax.Array  # mean |TD| (or distributional loss) used as the priority
    epsilon: jax.Array  # exploration rate of the rollout
