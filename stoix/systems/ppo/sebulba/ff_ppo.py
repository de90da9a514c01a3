"""PPO (Schulman et al., 2017) on the Sebulba architecture: host envs, actor threads, a learner.

What the learner does per rollout (`learn`: values, GAE, epochs × minibatches of the on-policy
base's minibatch step, with the env-reset steps masked out), then `build`. Acting, networks,
optimisers and evaluation come from the on-policy base (`stoix.systems.on_policy_base`); the
runner's threads, queues, parameter source and evaluator are shared by every Sebulba system.

    python stoix/systems/ppo/sebulba/ff_ppo.py arch=sebulba env=envpool/cartpole
"""

import functools
from typing import Tuple

import jax
import jax.numpy as jnp
from omegaconf import DictConfig

from stoix.runners.sebulba import run_sebulba
from stoix.system_api import (
    Rollout,
    SebulbaBuildContext,
    SebulbaLayout,
    SebulbaParts,
    SebulbaSystem,
)
from stoix.systems.on_policy_base import (
    SebulbaLearnerState,
    read_hyperparameters,
    sebulba_parts,
)
from stoix.systems.on_policy_learning import (
    MinibatchData,
    Networks,
    PolicyLoss,
    PPOHyperparameters,
    flatten_time,
    minibatch_step,
)
from stoix.systems.ppo.ppo_base import ppo_policy_loss, validate_ppo
from stoix.systems.ppo.ppo_types import PPOLossInfo
from stoix.utils.config import RunPlan
from stoix.utils.entry import hydra_main
from stoix.utils.minibatches import run_epochs
from stoix.utils.multistep import generalized_advantage_estimation

# LEARNING (on each learner device's share of the envs, once per rollout)


def learn(
    networks: Networks,
    hp: PPOHyperparameters,
    policy_loss: PolicyLoss,
    state: SebulbaLearnerState,
    rollout: Rollout,
) -> Tuple[SebulbaLearnerState, PPOLossInfo]:
    # One critic pass over all T + 1 observations gives V(s_t) and the bootstrap V(s_{t+1}); at
    # an episode's end s_{t+1} is its final observation (host envs reset on the next step).
    all_values = networks.critic_apply(state.params.critic_params, rollout.observation)
    values, next_values = all_values[:-1], all_values[1:]
    discount = hp.gamma * (1.0 - rollout.terminated.astype(jnp.float32))
    episode_end = rollout.terminated | rollout.truncated
    advantages, targets = generalized_advantage_estimation(
        rollout.reward, values, next_values, discount, episode_end, hp.gae_lambda
    )
    observation = jax.tree.map(lambda x: x[:-1], rollout.observation)
    data = MinibatchData(
        observation,
        rollout.extras.action,
        rollout.extras.log_prob,
        values,
        advantages,
        targets,
        # The step after an episode's end only reset the env: its action did nothing.
        mask=rollout.valid,
    )
    step = functools.partial(minibatch_step, networks, hp, policy_loss)
    (params, opt_states), key, info = run_epochs(
        step,
        (state.params, state.opt_states),
        flatten_time(data),
        state.key,
        hp.epochs,
        hp.num_minibatches,
    )
    return SebulbaLearnerState(params, opt_states, key), jax.tree.map(jnp.mean, info)


# SET-UP


def build(ctx: SebulbaBuildContext) -> SebulbaParts:
    hp = read_hyperparameters(ctx.config.system, ctx.plan)
    policy_loss = ppo_policy_loss(ctx.config.system)
    return sebulba_parts(ctx, lambda networks: functools.partial(learn, networks, hp, policy_loss))


def validate(cfg: DictConfig, plan: RunPlan, layout: SebulbaLayout) -> None:
    validate_ppo(
        cfg,
        plan,
        batch_label="arch.total_num_envs / learner devices",
        envs_per_learner=plan.total_num_envs // len(layout.learner_devices),
    )


SYSTEM = SebulbaSystem(
    name="ff_ppo", action_kinds=("discrete", "continuous"), build=build, validate=validate
)


def run_experiment(cfg: DictConfig) -> float:
    """Trains PPO on Sebulba as configured; returns the last evaluation's mean episode return."""
    return run_sebulba(cfg, SYSTEM)


@hydra_main("ff_ppo", arch_dir="default/sebulba")
def main(cfg: DictConfig) -> float:
    return run_experiment(cfg)


if __name__ == "__main__":
    main()
