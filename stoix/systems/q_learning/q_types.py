"""Types shared by the replay-based Q-learning systems."""

from typing import Any, NamedTuple

import jax

from stoix.base_types import (
    EnvState,
    NStepBatch,
    Observation,
    OnlineAndTarget,
    OptState,
    PRNGKey,
    Transition,
)

# The replay family stores and samples the transitions every replay-based system uses.
QTransition = Transition
QBatch = NStepBatch


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
