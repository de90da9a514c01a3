"""Bad configs fail before compiling with one line naming the key, and write nothing."""

import pytest

from stoix.systems.ppo.anakin import ff_ppo, ff_ppo_continuous
from stoix.utils.config import ConfigError
from stoix.utils.entry import compose_config
from tests.helpers import TINY, run_script


def check(overrides, match, system=ff_ppo, config="ff_ppo", tmp_path=None):
    cfg = compose_config(config, [*TINY, f"logger.base_exp_path={tmp_path}", *overrides])
    with pytest.raises(ConfigError, match=match):
        system.run_experiment(cfg)
    assert not any(tmp_path.iterdir()), "a failed config must write nothing"


@pytest.mark.parametrize(
    "overrides, match",
    [
        (["arch.total_num_envs=7"], "arch.total_num_envs=7 is not divisible by 2 device"),
        (["arch.total_num_envs=8", "arch.update_batch_size=3"], "arch.update_batch_size=3"),
        (["arch.total_timesteps=0"], "arch.total_timesteps=0 must be a positive integer"),
        (["arch.total_timesteps=-5"], "arch.total_timesteps"),
        (["arch.num_evaluation=0"], "arch.num_evaluation"),
        (["arch.total_timesteps=100"], "arch.total_timesteps=100 is too small"),
        (["system.num_minibatches=3"], "system.num_minibatches=3"),
        (["system.gamma=1.5"], "system.gamma"),
        (["env.scenario=NotAnEnv-v0"], "env.scenario='NotAnEnv-v0'"),
        (["env.suite=nosuchsuite"], "env.suite='nosuchsuite'"),
        (["arch.total_timesteps=null"], "arch.total_timesteps"),
        (["arch.num_updates=10"], "only one of arch.total_timesteps and arch.num_updates"),
        (["logger.checkpointing.load_model=True"], "no checkpoint of this exact config"),
        (["arch.sweep.key=system.actor_lr"], "arch.sweep.values=\\[\\] must be a non-empty list"),
        (["arch.sweep.values=[1,2]"], "arch.sweep.key=None must name a system hyperparameter"),
        (["arch.sweep.key=system.nope", "arch.sweep.values=[1]"], "system.nope is not a key"),
        (["arch.sweep.key=system.gamma", "arch.sweep.values=0.9"], "must be a list"),
        (["arch.sweep.key=system.gamma", "arch.sweep.values=[0.9,0.9]"], "must all differ"),
    ],
)
def test_bad_config_is_one_clear_error(overrides, match, tmp_path):
    check(overrides, match, tmp_path=tmp_path)


def test_continuous_system_on_discrete_env(tmp_path):
    check(
        ["env=gymnax/cartpole"],
        "has discrete actions but ff_ppo_continuous handles only continuous",
        system=ff_ppo_continuous,
        config="ff_ppo_continuous",
        tmp_path=tmp_path,
    )


def test_value_based_system_on_continuous_env_is_one_line(tmp_path):
    result = run_script(
        "stoix/systems/q_learning/anakin/ff_dqn.py",
        ["env=gymnax/pendulum", f"logger.base_exp_path={tmp_path}"],
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "stoix: error: env=gymnax/pendulum has continuous actions but ff_dqn handles only "
        "discrete actions"
    )
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    "overrides, match",
    [
        (["system.batch_size=15"], "system.batch_size=15 is not divisible by 2 device"),
        (["system.buffer_size=64"], "system.buffer_size=64 holds only 8 steps per env"),
        (["system.warmup_steps=2", "system.n_step=3"], "system.warmup_steps=2 must be at least"),
        (["system.epsilon_end=1.5"], "system.epsilon_end"),
        (["system.n_step=0"], "system.n_step"),
        (["network=mlp_pqn_batch_norm"], "BatchNorm statistics are updated only by ff_pqn"),
    ],
)
def test_bad_dqn_config_is_one_clear_error(overrides, match, tmp_path):
    from stoix.systems.q_learning.anakin import ff_dqn

    check(overrides, match, system=ff_dqn, config="ff_dqn", tmp_path=tmp_path)


def test_added_unknown_key_is_refused():
    with pytest.raises(ConfigError, match="'system.not_a_key' is not a known config key"):
        compose_config("ff_ppo", ["+system.not_a_key=1"])


def test_command_line_error_is_one_line_and_exit_2(tmp_path):
    result = run_script(
        "stoix/systems/ppo/anakin/ff_ppo.py",
        ["arch.total_num_envs=7", f"logger.base_exp_path={tmp_path}"],
    )
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == [
        "stoix: error: arch.total_num_envs=7 is not divisible by 2 device(s) × "
        "arch.update_batch_size=1"
    ], result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert not any(tmp_path.iterdir())


def test_command_line_unknown_key_names_it(tmp_path):
    result = run_script(
        "stoix/systems/ppo/anakin/ff_ppo.py",
        ["system.not_a_key=1", f"logger.base_exp_path={tmp_path}"],
    )
    assert result.returncode != 0
    assert "system.not_a_key" in result.stderr
    assert "Traceback" not in result.stderr
