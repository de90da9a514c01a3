"""Recurrent PQN: memory is reset at episode starts, targets bootstrap from the episode's own
memory at the true final observation, and the recurrent agent solves a task that ff_pqn cannot."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stoix.base_types import Observation
from stoix.errors import ConfigError
from stoix.networks.recurrent import make_recurrent_q_network, unroll
from stoix.runners.anakin import run_anakin_measured
from stoix.systems.q_learning.anakin import ff_pqn, rec_pqn
from stoix.utils.config import make_run_plan
from stoix.utils.entry import compose_config
from stoix.wrappers.env_factory import make_env
from tests.helpers import TINY

OBS_DIM, NUM_ACTIONS = 5, 4


def make_network(network: str):
    cfg = compose_config("rec_pqn", [f"network={network}"])
    net = make_recurrent_q_network(cfg.network, make_env(cfg.env).spec)
    return net


def observations(key, shape):
    view = jax.random.normal(key, shape + (OBS_DIM,))
    return Observation(
        agent_view=view,
        action_mask=jnp.ones(shape + (NUM_ACTIONS,), bool),
        step_count=jnp.zeros(shape, jnp.int32),
    )


def init(net, batch):
    obs = observations(jax.random.PRNGKey(0), (batch,))
    return net.init(
        jax.random.PRNGKey(1), net.initial_hidden((batch,)), obs, jnp.ones((batch,), bool)
    )


@pytest.mark.parametrize("network", ["rnn_pqn", "lstm_pqn"])
def test_hidden_state_is_zeroed_where_an_episode_starts(network):
    net = make_network(network)
    params = init(net, 2)
    steps, start = 6, 3
    obs = observations(jax.random.PRNGKey(2), (steps, 2))
    resets = np.zeros((steps, 2), bool)
    resets[start, 0] = True  # env 0 begins a new episode at step 3; env 1 does not
    # A non-zero hidden state before step 0: only a reset may clear it.
    hidden = jax.tree.map(lambda h: h + 0.7, net.initial_hidden((2,)))
    _, (q, _) = unroll(net.apply, params, hidden, obs, jnp.asarray(resets))

    tail = jax.tree.map(lambda x: x[start:], obs)
    _, (fresh_q, _) = unroll(
        net.apply, params, net.initial_hidden((2,)), tail, jnp.zeros((steps - start, 2), bool)
    )
    np.testing.assert_allclose(q[start:, 0], fresh_q[:, 0], rtol=1e-5, atol=1e-6)
    # Env 1 kept its memory, so the same observations give other values: the check above
    # would fail if the network ignored its hidden state.
    assert np.max(np.abs(np.asarray(q[start:, 1] - fresh_q[:, 1]))) > 1e-4


def test_targets_bootstrap_from_the_final_observation_with_the_episodes_memory():
    """Three steps of one env: step 1 is truncated (its final observation differs from the
    reset observation that follows), step 2 is the rollout's last step; λ = 0 so each target is
    r + γ d max_a Q(next), with Q(next) computed here by stepping the network by hand."""
    net = make_network("rnn_pqn")
    params = init(net, 1)
    obs = observations(jax.random.PRNGKey(3), (3, 1))
    final_obs = observations(jax.random.PRNGKey(4), (3, 1))  # true next observations
    new_episode = jnp.asarray([[True], [False], [True]])
    reward = jnp.asarray([[1.0], [2.0], [3.0]])
    discount = jnp.asarray([[1.0], [1.0], [1.0]])  # truncation keeps the bootstrap
    episode_end = jnp.asarray([[False], [True], [False]])
    no, yes = jnp.asarray([False]), jnp.asarray([True])

    def at(tree, t):
        return jax.tree.map(lambda x: x[t], tree)

    h0, _ = net.apply(params, net.initial_hidden((1,)), at(obs, 0), yes)
    h1, _ = net.apply(params, h0, at(obs, 1), no)
    h2, _ = net.apply(params, h1, at(obs, 2), yes)
    traj = rec_pqn.RecPQNTransition(
        observation=obs,
        new_episode=new_episode,
        action=jnp.zeros((3, 1), jnp.int32),
        reward=reward,
        discount=discount,
        episode_end=episode_end,
        next_observation=final_obs,
        hidden=jnp.stack([h0, h1, h2]),
        episode_return=jnp.zeros((3, 1)),
        episode_length=jnp.zeros((3, 1), jnp.int32),
    )
    cfg = compose_config("rec_pqn", [*TINY, "system.gamma=0.9", "system.num_minibatches=1"])
    hp = rec_pqn.pqn_hyperparameters(cfg.system, make_run_plan(cfg, 1))
    networks = rec_pqn.Networks(apply=net.apply, optimiser=None)
    targets = rec_pqn.recurrent_q_lambda_targets(networks, params, traj, hp, jnp.asarray(0.0))
    expected = []
    for t, h in enumerate((h0, h1, h2)):
        _, q_next = net.apply(params, h, at(final_obs, t), no)
        expected.append(float(reward[t, 0]) + 0.9 * float(jnp.max(q_next.q_values)))
    np.testing.assert_allclose(np.asarray(targets[:, 0]), expected, rtol=1e-5)

    # The wrong bootstrap for the truncated step (the reset observation, fresh memory) differs.
    _, q_wrong = net.apply(params, h1, at(obs, 2), yes)
    assert abs(expected[1] - (2.0 + 0.9 * float(jnp.max(q_wrong.q_values)))) > 1e-4

    # Termination: no bootstrap at all.
    terminated = traj._replace(discount=jnp.asarray([[1.0], [0.0], [1.0]]))
    targets = rec_pqn.recurrent_q_lambda_targets(networks, params, terminated, hp, jnp.asarray(0.0))
    assert float(targets[1, 0]) == pytest.approx(2.0)


def test_rollout_records_the_hidden_state_after_each_step():
    """The targets bootstrap from the hidden states the rollout recorded: they must be what
    replaying the rollout's observations, with its resets, from its first hidden state gives."""
    cfg = compose_config("rec_pqn", [*TINY, "system.num_minibatches=1"])
    env = make_env(cfg.env)
    net = make_recurrent_q_network(cfg.network, env.spec)
    params = init(net, 2)
    hp = rec_pqn.pqn_hyperparameters(cfg.system, make_run_plan(cfg, 1))
    env_state, timestep = jax.vmap(env.reset)(jax.random.split(jax.random.PRNGKey(5), 2))
    hidden_start = jax.tree.map(lambda h: h + 0.3, net.initial_hidden((2,)))
    state = rec_pqn.RecPQNLearnerState(
        params=params,
        opt_state=None,
        key=jax.random.PRNGKey(6),
        env_state=env_state,
        observation=timestep.observation,
        new_episode=jnp.asarray([True, False]),
        hidden=hidden_start,
        env_steps=jnp.zeros((), jnp.int32),
        q_lambda=jnp.asarray(0.9),
    )
    networks = rec_pqn.Networks(apply=net.apply, optimiser=None)
    _, traj = jax.jit(lambda s: rec_pqn.rollout(networks, env, hp, s, jnp.asarray(0.5)))(state)
    assert traj.action.shape == (hp.rollout_length, 2)
    assert bool(jnp.any(traj.new_episode[1:]))  # recall episodes (10 steps) restart inside it
    _, (_, replayed) = unroll(net.apply, params, hidden_start, traj.observation, traj.new_episode)
    np.testing.assert_allclose(traj.hidden, replayed, rtol=1e-5, atol=1e-6)


def test_feed_forward_network_is_refused(tmp_path):
    cfg = compose_config("rec_pqn", [*TINY, "network=mlp_pqn", f"logger.base_exp_path={tmp_path}"])
    with pytest.raises(ConfigError, match="rec_pqn needs a recurrent network"):
        rec_pqn.run_experiment(cfg)
    assert not any(tmp_path.iterdir())


def test_minibatches_must_divide_the_envs(tmp_path):
    cfg = compose_config(
        "rec_pqn", [*TINY, "system.num_minibatches=3", f"logger.base_exp_path={tmp_path}"]
    )
    with pytest.raises(ConfigError, match="system.num_minibatches=3"):
        rec_pqn.run_experiment(cfg)


@pytest.mark.slow  # about 1 min on 2 cores; the default run keeps the unit and smoke tests
def test_recurrent_pqn_solves_recall_where_feed_forward_pqn_cannot(tmp_path):
    # rec_pqn's default run (the recall task: 4 cues, 8 blank steps), on two forced CPU devices.
    # A memoryless policy earns at most 1/4 in expectation.
    common = [
        f"logger.base_exp_path={tmp_path}",
        "logger.use_tb=False",
        "arch.num_eval_episodes=64",
    ]
    recurrent = run_anakin_measured(compose_config("rec_pqn", common), rec_pqn.SYSTEM)
    assert recurrent.absolute_return >= 0.95, recurrent
    feed_forward_cfg = compose_config(
        "ff_pqn",
        [
            *common,
            "env=memory/recall",
            "arch.total_num_envs=64",
            "arch.total_timesteps=1e5",
            "system.rollout_length=16",
            "system.num_minibatches=4",
            "system.q_lr=3e-4",
            "system.reward_scale=1.0",
        ],
    )
    feed_forward = run_anakin_measured(feed_forward_cfg, ff_pqn.SYSTEM)
    assert feed_forward.absolute_return <= 0.5, feed_forward
