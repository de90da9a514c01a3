"""Craftax adapter: optimistic auto-reset, and termination vs truncation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("craftax")

from stoix.wrappers.craftax import CraftaxAdapter  # noqa: E402
from tests.helpers import TINY, read_metrics, run_script, runs_of  # noqa: E402

SCENARIO = "Craftax-Classic-Symbolic-v1"


def test_batched_auto_reset_draws_one_fresh_world_per_reset_ratio_envs() -> None:
    adapter = CraftaxAdapter(SCENARIO, reset_ratio=3)
    keys = jax.random.split(jax.random.PRNGKey(0), 7)

    @jax.jit
    def resets(keys):
        unbatched_auto, _ = adapter.auto_reset(keys[3])
        return jax.vmap(adapter.auto_reset)(keys), jax.vmap(adapter.reset)(keys), unbatched_auto

    (auto_states, auto_obs), (own_states, _), unbatched_auto = jax.device_get(resets(keys))
    # Outside a vmap there is nothing to share: an auto-reset is the env's own reset.
    np.testing.assert_array_equal(unbatched_auto.map, own_states.map[3])
    # ceil(7 / 3) = 3 worlds, made from the first three keys; every env starts in one of them.
    worlds = own_states.map[:3]
    chosen = [
        next((w for w in range(3) if np.array_equal(auto_states.map[i], worlds[w])), None)
        for i in range(7)
    ]
    assert None not in chosen, f"an env got a world that none of the fresh draws made: {chosen}"
    assert len(set(chosen)) >= 2, "seven envs should not all draw the same of three worlds"
    # The observation belongs to the chosen state, and the three worlds differ.
    for i, w in enumerate(chosen):
        np.testing.assert_array_equal(auto_states.player_position[i], own_states.player_position[w])
    assert not np.array_equal(worlds[0], worlds[1]) and not np.array_equal(worlds[1], worlds[2])
    assert auto_obs.agent_view.shape == (7, *adapter.spec.observation_shape)
    assert np.all(auto_states.timestep == 0)


def test_death_and_lava_terminate_and_the_time_limit_truncates() -> None:
    adapter = CraftaxAdapter(SCENARIO)
    assert adapter.spec.max_episode_steps == 10_000 and adapter.spec.num_actions == 17
    state, _ = adapter.reset(jax.random.PRNGKey(1))
    state = jax.tree.map(jnp.asarray, state)  # some fields of a fresh state are Python numbers
    from craftax.craftax_classic.constants import BlockType

    row, col = (int(x) for x in state.player_position)
    cases = {
        "dead": state.replace(player_health=jnp.asarray(0.0, state.player_health.dtype)),
        "lava": state.replace(map=state.map.at[row, col].set(BlockType.LAVA.value)),
        "time_up": state.replace(timestep=jnp.asarray(9_999, state.timestep.dtype)),
        "alive": state,
    }
    batch = jax.tree.map(lambda *xs: jnp.stack(xs), *cases.values())
    noop = jnp.zeros((len(cases),), jnp.int32)
    keys = jax.random.split(jax.random.PRNGKey(2), len(cases))
    _, out = jax.device_get(jax.jit(jax.vmap(adapter.step))(batch, noop, keys))
    got = {name: (bool(out.terminated[i]), bool(out.truncated[i])) for i, name in enumerate(cases)}
    assert got == {
        "dead": (True, False),
        "lava": (True, False),
        "time_up": (False, True),
        "alive": (False, False),
    }


@pytest.mark.slow  # Craftax compiles for about 2 minutes on CPU
def test_rec_pqn_runs_craftax_on_two_devices(tmp_path) -> None:
    result = run_script(
        "stoix/systems/q_learning/anakin/rec_pqn.py",
        [
            *TINY,
            "system=q_learning/rec_pqn_craftax",
            "network=rnn_pqn_craftax",
            "env=craftax/classic_symbolic",
            "env.max_episode_steps=64",  # every env ends episodes, so auto-resets are exercised
            "arch.total_timesteps=2048",
            "system.rollout_length=16",
            "system.num_minibatches=2",
            f"logger.base_exp_path={tmp_path}",
        ],
    )
    assert result.returncode == 0, result.stderr[-2000:]
    (run,) = runs_of(read_metrics(tmp_path)).values()
    final = run["absolute_metrics"]
    assert len(final["episode_return"]) == 8 and np.all(np.isfinite(final["episode_return"]))
