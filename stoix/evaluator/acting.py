"""The one eval-act factory for systems whose actor is a policy distribution.

The evaluator receives the actor's parameters together with the observation statistics, so it
normalises observations exactly as training does; it acts with the policy's mode (greedy) or a
sample, then maps the action to what the env accepts (e.g. clipped to the bounds).
"""

from typing import Any, Callable, Tuple

import jax

from stoix.base_types import Observation, Params, PRNGKey
from stoix.evaluator.anakin import EvalActFn
from stoix.networks.distributions import greedy_action
from stoix.utils.running_statistics import RunningStatistics, observe


def policy_eval_act(
    actor_apply: Callable[..., Any],
    normalise_observations: bool,
    to_env_action: Callable[[jax.Array], jax.Array] = lambda action: action,
) -> Callable[[bool], EvalActFn]:
    """greedy flag -> act((actor params, statistics), observation [N], key) -> env actions [N]."""

    def eval_act(greedy: bool) -> EvalActFn:
        def act(
            policy: Tuple[Params, RunningStatistics], observation: Observation, key: PRNGKey
        ) -> jax.Array:
            params, stats = policy
            dist = actor_apply(params, observe(stats, observation, normalise_observations))
            action = greedy_action(dist) if greedy else dist.sample(seed=key)
            return to_env_action(action)

        return act

    return eval_act
