"""PQN-VDN: the team targets by hand, the JaxMARL adapter, a two-device run, and learning."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from omegaconf import OmegaConf

from stoix.base_types import StepType
from stoix.errors import ConfigError
from stoix.networks.base import make_q_network
from stoix.networks.heads import INVALID_ACTION_VALUE
from stoix.runners.anakin import run_anakin_measured
from stoix.systems.q_learning.anakin import ff_pqn_vdn
from stoix.utils.config import make_run_plan
from stoix.utils.entry import compose_config
from stoix.wrappers.env_factory import make_env
from tests.helpers import TINY, read_metrics, run_script, runs_of


def env_config(name: str, **kwargs):
    cfg = OmegaConf.load(f"stoix/configs/env/jaxmarl/{name}.yaml")
    cfg.kwargs = {**OmegaConf.to_container(cfg.kwargs), **kwargs}
    return cfg


# TARGETS


def test_vdn_targets_by_hand():
    # T=3 steps of one env, 2 agents, 3 actions. Step 0 continues, step 1 terminates,
    # step 2 is truncated (bootstraps from its true next observation).
    valid = jnp.array(
        [
            [[True, False, True], [True, True, True]],
            [[True, True, True], [True, True, True]],
            [[True, True, True], [True, False, True]],
        ]
    )
    raw_next_q = jnp.array(
        [
            [[1.0, 5.0, 2.0], [0.0, 3.0, -1.0]],  # Σ max over valid: 2 + 3 = 5 (5.0 is masked)
            [[100.0, 0.0, 0.0], [0.0, 0.0, 0.0]],  # terminal: never bootstrapped
            [[4.0, -2.0, 0.0], [-1.0, 7.0, -3.0]],  # 4 + (-1) = 3 (7.0 is masked)
        ]
    )
    next_q = jnp.where(valid, raw_next_q, INVALID_ACTION_VALUE)[:, None]  # [T, N=1, 2, 3]
    reward = jnp.array([[1.0], [2.0], [0.5]])
    discount = jnp.array([[1.0], [0.0], [1.0]])
    episode_end = jnp.array([[False], [True], [True]])
    targets = ff_pqn_vdn.vdn_targets(next_q, reward, discount, episode_end, 0.9, 0.5)
    # G2 = 0.5 + 0.9·3; G1 = 2 (no bootstrap); G0 = 1 + 0.9·(0.5·5 + 0.5·G1)
    np.testing.assert_allclose(targets[:, 0], [1.0 + 0.9 * (2.5 + 1.0), 2.0, 3.2], rtol=1e-6)


def test_shared_q_network_is_applied_per_agent_with_masks():
    cfg = compose_config("ff_pqn_vdn", [*TINY])
    env = make_env(env_config("overcooked_cramped_room"))
    network = make_q_network(cfg.network, env.spec)
    _, timestep = jax.jit(jax.vmap(env.reset))(jax.random.split(jax.random.PRNGKey(0), 3))
    obs = timestep.observation
    params = network.init(jax.random.PRNGKey(1), obs)
    q = network.apply(params, obs).q_values
    assert q.shape == (3, 2, 6)
    # One set of parameters for all agents: agent 1 given agent 0's view values it alike...
    same = obs.agent_view.at[:, 1].set(obs.agent_view[:, 0])
    q_same = network.apply(params, obs._replace(agent_view=same)).q_values
    np.testing.assert_allclose(q_same[:, 1], q[:, 0], rtol=1e-5, atol=1e-6)
    # ...and the one-hot id alone is enough to tell the agents apart.
    other_id = same.at[:, 1, -2:].set(jnp.array([0.0, 1.0]))
    q_other_id = network.apply(params, obs._replace(agent_view=other_id)).q_values
    assert float(jnp.max(jnp.abs(q_other_id[:, 1] - q[:, 0]))) > 1e-3
    mask = obs.action_mask.at[:, 1, 2].set(False)
    masked = network.apply(params, obs._replace(action_mask=mask)).q_values
    assert bool(jnp.all(masked[:, 1, 2] <= INVALID_ACTION_VALUE / 2))
    np.testing.assert_allclose(masked[:, 0], q[:, 0])


def test_single_agent_env_is_refused():
    cfg = compose_config("ff_pqn_vdn", [*TINY, "env=gymnax/cartpole"])
    with pytest.raises(ConfigError, match="env.suite=jaxmarl"):
        ff_pqn_vdn.SYSTEM.validate(cfg, make_run_plan(cfg, 1))


# THE ADAPTER


def test_smax_adapter_shapes_masks_ids_team_reward_and_episode_ends():
    env = make_env(env_config("smax_3m"))
    assert env.spec.observation_shape == (3, 75 + 3)
    assert env.spec.num_actions == 8 and env.max_episode_steps == 101
    num = 16
    state, timestep = jax.jit(jax.vmap(env.reset))(jax.random.split(jax.random.PRNGKey(0), num))
    obs = timestep.observation
    assert obs.agent_view.shape == (num, 3, 78) and obs.action_mask.shape == (num, 3, 8)
    np.testing.assert_array_equal(obs.agent_view[0, :, -3:], np.eye(3))
    # Units start out of range: only the 5 movement/stop actions are available.
    assert bool(jnp.all(obs.action_mask[..., :5])) and not bool(jnp.any(obs.action_mask[..., 5:]))

    @jax.jit
    def play(state, obs, key):
        def step(carry, key):
            state, obs = carry
            logits = jnp.where(obs.action_mask, 0.0, -jnp.inf)
            action = jax.random.categorical(key, logits).astype(jnp.int32)
            state, ts = jax.vmap(env.step)(state, action)
            return (state, ts.observation), (ts, action)

        return jax.lax.scan(step, (state, obs), jax.random.split(key, 120))[1]

    traj, action = play(state, obs, jax.random.PRNGKey(1))
    assert action.shape == (120, num, 3) and action.dtype == jnp.int32
    terminated = traj.step_type == StepType.TERMINATED
    truncated = traj.step_type == StepType.TRUNCATED
    # Random allies lose most battles well before the limit: terminal, no bootstrap.
    assert int(terminated.sum()) >= num
    assert bool(jnp.all(traj.discount[terminated] == 0.0))
    assert bool(jnp.all(traj.metrics.episode_length[terminated] < 101))
    assert bool(jnp.all(traj.metrics.episode_length[truncated] == 101))
    assert bool(jnp.all(traj.discount[truncated] == 1.0))
    # Team return: enemy health removed (≤ 1) plus 1 for a win.
    assert float(traj.reward.max()) <= 2.0 and float(traj.reward.min()) >= 0.0


def test_smax_team_reward_is_every_allys_reward():
    adapter = make_env(env_config("smax_3m")).adapter
    raw = adapter._env
    state, _ = jax.jit(adapter.reset)(jax.random.PRNGKey(3))

    @jax.jit
    def rewards(state, key):
        def step(state, key):
            act_key, step_key = jax.random.split(key)
            avail = raw.get_avail_actions(state.env_state)
            mask = jnp.stack([avail[a] for a in raw.agents]) > 0
            action = jax.random.categorical(act_key, jnp.where(mask, 0.0, -jnp.inf))
            action = action.astype(jnp.int32)
            actions = {a: action[i] for i, a in enumerate(raw.agents)}
            _, _, raw_rewards, _, _ = raw.step_env(step_key, state.env_state, actions)
            state, out = adapter.step(state, action, step_key)
            return state, (out.reward, jnp.stack([raw_rewards[a] for a in raw.agents]))

        return jax.lax.scan(step, state, jax.random.split(key, 20))[1]

    team, per_agent = rewards(state, jax.random.PRNGKey(4))
    assert float(team.max()) > 0.0
    np.testing.assert_array_equal(per_agent, jnp.broadcast_to(per_agent[:, :1], per_agent.shape))
    np.testing.assert_allclose(team, per_agent[:, 0], rtol=1e-6)


def test_overcooked_adapter_is_never_terminal_and_truncates_at_its_limit():
    env = make_env(env_config("overcooked_cramped_room", max_steps=5))
    assert env.spec.observation_shape == (2, 4 * 5 * 26 + 2) and env.spec.num_actions == 6
    assert env.max_episode_steps == 5
    state, timestep = jax.jit(env.reset)(jax.random.PRNGKey(0))
    assert bool(jnp.all(timestep.observation.action_mask))
    np.testing.assert_array_equal(timestep.observation.agent_view[:, -2:], np.eye(2))
    step = jax.jit(env.step)
    types = []
    for _ in range(6):
        state, timestep = step(state, jnp.array([4, 5], jnp.int32))
        types.append(int(timestep.step_type))
    assert types == [StepType.MID] * 4 + [StepType.TRUNCATED, StepType.MID]


# RUNS


def test_two_device_run_with_two_seeds(tmp_path):
    result = run_script(
        "stoix/systems/q_learning/anakin/ff_pqn_vdn.py",
        [
            *TINY,
            "env=jaxmarl/overcooked_cramped_room",
            "env.max_episode_steps=20",
            "arch.total_timesteps=1024",
            "arch.num_seeds=2",
            "system.rollout_length=8",
            "system.num_minibatches=2",
            "system.epochs=2",
            f"logger.base_exp_path={tmp_path}",
        ],
    )
    assert result.returncode == 0, result.stderr[-2000:]
    runs = runs_of(read_metrics(tmp_path))
    assert len(runs) == 2
    for run in runs.values():
        final = run["absolute_metrics"]
        assert len(final["episode_return"]) == 8 and np.all(np.isfinite(final["episode_return"]))


@pytest.mark.slow
def test_pqn_vdn_wins_smax_3m_with_default_config(tmp_path):
    # Defaults: 1e5 env steps, 16 envs, on two forced CPU devices. Random allies score ≈ 0.3 and
    # almost never win (a win adds 1 to a return of at most 2).
    cfg = compose_config("ff_pqn_vdn", [f"logger.base_exp_path={tmp_path}", "logger.use_tb=False"])
    result = run_anakin_measured(cfg, ff_pqn_vdn.SYSTEM)
    assert result.final_return >= 1.0, result
