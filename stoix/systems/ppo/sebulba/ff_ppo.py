"""PPO (Schulman et al., 2017) on the Sebulba architecture: host envs, actor threads, a learner.

Read top to bottom: what an actor does per step (`act`), what the learner does per rollout
(`learn`: values, GAE, epochs × minibatches), then `build`, which hands these to the Sebulba
runner. The losses and the minibatch step are Anakin PPO's (`stoix.systems.ppo.anakin.ff_ppo`);
the runner's threads, queues, parameter source and evaluator are shared by every Sebulba system.

    python stoix/systems/ppo/sebulba/ff_ppo.py arch=sebulba env=envpool/cartpole
"""

import functools
from typing import NamedTuple, Tuple

import jax
import jax.numpy as jnp
from omegaconf import DictConfig

from stoix.base_types import ActorCriticOptStates, ActorCriticParams, Observation, PRNGKey
from stoix.systems.ppo.anakin.ff_ppo import (
    MinibatchData,
    Networks,
    PolicyLoss,
    PPOHyperparameters,
    init_from_observation,
    make_eval_act,
    make_networks,
    minibatch_step,
    ppo_policy_loss,
    read_hyperparameters,
    to_env_action,
    validate_on_policy,
)
from stoix.systems.ppo.ppo_types import PPOLossInfo
from stoix.utils.config import RunPlan, check_range
from stoix.utils.entry import hydra_main
from stoix.utils.minibatches import run_epochs
from stoix.utils.multistep import generalized_advantage_estimation
from stoix.utils.running_statistics import init_statistics
from stoix.utils.sebulba import (
    Rollout,
    SebulbaBuildContext,
    SebulbaLayout,
    SebulbaParts,
    SebulbaSystem,
    run_sebulba,
)


class SebulbaPPOState(NamedTuple):
    params: ActorCriticParams
    opt_states: ActorCriticOptStates
    key: PRNGKey


class ActorExtras(NamedTuple):
    """What the learner needs from the acting policy, per step."""

    action: jax.Array  # [N] or [N, A], as sampled (before clipping to the env's bounds)
    log_prob: jax.Array  # [N]


# ACTING (on an actor device, once per env step)


def act(
    networks: Networks, actor_params: ActorCriticParams, observation: Observation, key: PRNGKey
) -> Tuple[jax.Array, ActorExtras, PRNGKey]:
    key, sample_key = jax.random.split(key)
    dist = networks.actor_apply(actor_params, observation)
    action = dist.sample(seed=sample_key)
    return to_env_action(networks, action), ActorExtras(action, dist.log_prob(action)), key


# LEARNING (on each learner device's share of the envs, once per rollout)


def learn(
    networks: Networks,
    hp: PPOHyperparameters,
    policy_loss: PolicyLoss,
    state: SebulbaPPOState,
    rollout: Rollout,
) -> Tuple[SebulbaPPOState, PPOLossInfo]:
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
    flat = jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), data)
    step = functools.partial(minibatch_step, networks, hp, policy_loss)
    (params, opt_states), key, info = run_epochs(
        step, (state.params, state.opt_states), flat, state.key, hp.epochs, hp.num_minibatches
    )
    return SebulbaPPOState(params, opt_states, key), jax.tree.map(jnp.mean, info)


# SET-UP


def build(ctx: SebulbaBuildContext) -> SebulbaParts:
    cfg, plan = ctx.config, ctx.plan
    hp = read_hyperparameters(cfg.system, plan)
    grad_steps = plan.num_updates * hp.epochs * hp.num_minibatches
    actor, critic, networks = make_networks(cfg, ctx.spec, grad_steps)
    policy_loss = ppo_policy_loss(cfg.system)
    identity_stats = init_statistics(ctx.spec.observation_shape)
    example = jax.tree.map(lambda x: x[0], ctx.example_observation)

    def init_learner(params_key: PRNGKey) -> SebulbaPPOState:
        actor_key, critic_key, state_key = jax.random.split(params_key, 3)
        params, opt_states = init_from_observation(
            example, actor, critic, networks, actor_key, critic_key
        )
        return SebulbaPPOState(params, opt_states, state_key)

    eval_act = make_eval_act(actor.apply, networks, hp)
    return SebulbaParts(
        init_learner=init_learner,
        actor_params=lambda state: state.params.actor_params,
        act=functools.partial(act, networks),
        learn=functools.partial(learn, networks, hp, policy_loss),
        # The evaluator gets the same (params, statistics) pair as Anakin's; Sebulba PPO does
        # not normalise observations, so the statistics stay at identity.
        eval_act=lambda greedy: (
            lambda params, obs, key: eval_act(greedy)((params, identity_stats), obs, key)
        ),
    )


def validate(cfg: DictConfig, plan: RunPlan, layout: SebulbaLayout) -> None:
    validate_on_policy(
        cfg,
        plan,
        batch_label="arch.total_num_envs / learner devices",
        envs_per_learner=plan.total_num_envs // len(layout.learner_devices),
    )
    check_range(cfg, "system.clip_epsilon", 0.0, float("inf"))


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
