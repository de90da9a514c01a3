"""Bad configs and bad command lines fail before compiling with one line naming the key, exit
status 2, and write nothing."""

import jax
import pytest

from stoix.errors import ConfigError
from stoix.runners.sebulba_layout import make_sebulba_plan, resolve_layout
from stoix.systems.ppo.anakin import ff_ppo, ff_ppo_continuous
from stoix.systems.q_learning.anakin import ff_dqn, ff_pqn
from stoix.systems.sac.anakin import ff_sac
from stoix.utils.config import make_run_plan
from stoix.utils.entry import compose_config, preflight
from tests.helpers import TINY, run_script


def check(overrides, match, system=ff_ppo, config="ff_ppo", tmp_path=None):
    cfg = compose_config(config, [*TINY, f"logger.base_exp_path={tmp_path}", *overrides])
    with pytest.raises(ConfigError, match=match) as raised:
        system.run_experiment(cfg)
    assert "\n" not in str(raised.value)
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
        # Integers stay integers: these used to run as 1 and 2 without a word.
        (["system.epochs=1.5"], "system.epochs=1.5 must be a positive integer"),
        (["system.num_minibatches=2.5"], "system.num_minibatches=2.5 must be a positive integer"),
        (["arch.total_timesteps=1e6", "arch.num_seeds=2.0", "system.epochs=-1"], "system.epochs"),
        # A negative cap made every evaluation report 0; text used to be a traceback.
        (["arch.eval_max_steps=-3"], "arch.eval_max_steps=-3 must be a positive integer or null"),
        (["arch.eval_max_steps=abc"], "arch.eval_max_steps=abc must be a positive integer"),
        # Past int64 jax.random.PRNGKey overflows; past 32 bits seeds alias each other.
        (["arch.seed=99999999999999999999"], "arch.seed=99999999999999999999 must be an integer"),
        (["arch.seed=4294967338"], r"arch.seed=4294967338 must be an integer in \[0, 1073741823\]"),
        (["arch.seed=-1"], "arch.seed=-1 must be an integer in"),
        (["system.actor_lr=fast"], "system.actor_lr=fast must be a non-negative number"),
        (["logger.use_tb=maybe"], "logger.use_tb=maybe must be True or False"),
        (["network.actor_network.pre_torso.layer_sizes=[64,0]"], r"layer_sizes\[1\]=0"),
        (["network.actor_network.pre_torso.activation=swish"], "must be one of relu, tanh"),
        (
            ["network.critic_network.pre_torso._target_=stoix.networks.torso.MLPTorsoo"],
            "stoix.networks.torso has no MLPTorsoo \\(did you mean stoix.networks.torso.MLPTorso",
        ),
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


@pytest.mark.parametrize(
    "overrides, match",
    [
        (["system.batch_size=15"], "system.batch_size=15 is not divisible by 2 device"),
        (["system.batch_size=32", "system.buffer_size=64"], "system.buffer_size=64 holds only 8"),
        (["system.buffer_size=64"], "system.batch_size=128 is larger than system.buffer_size=64"),
        (["system.batch_size=20000"], "system.batch_size=20000 is larger than system.buffer_size"),
        (["system.batch_size=12.5"], "system.batch_size=12.5 must be a positive integer"),
        (["system.warmup_steps=2", "system.n_step=3"], "system.warmup_steps=2 must be at least"),
        (["system.epsilon_end=1.5"], "system.epsilon_end"),
        (["system.n_step=0"], "system.n_step"),
        (["network=mlp_pqn_batch_norm"], "BatchNorm statistics are updated only by ff_pqn"),
        (
            ["network.q_network.q_head._target_=stoix.networks.heads.ScalarCriticHead"],
            "network.q_network.q_head.dueling is not an argument of stoix.networks.heads.Scalar",
        ),
    ],
)
def test_bad_dqn_config_is_one_clear_error(overrides, match, tmp_path):
    check(overrides, match, system=ff_dqn, config="ff_dqn", tmp_path=tmp_path)


@pytest.mark.parametrize(
    "system, config, overrides, match",
    [
        (ff_sac, "ff_sac", ["system.batch_size=12.5"], "system.batch_size=12.5 must be a positive"),
        (ff_sac, "ff_sac", ["system.batch_size=200000"], "system.batch_size=200000 is larger"),
        (ff_pqn, "ff_pqn", ["system.max_grad_norm=-1"], "system.max_grad_norm=-1 must be positive"),
        (ff_pqn, "ff_pqn", ["system.q_lambda=True"], "system.q_lambda=True must be a finite"),
    ],
)
def test_bad_value_of_another_system_is_one_clear_error(system, config, overrides, match, tmp_path):
    check(overrides, match, system=system, config=config, tmp_path=tmp_path)


def test_sebulba_plan_errors_name_actor_threads():
    cfg = compose_config("ff_ppo", ["arch.total_num_envs=7"], arch_dir="default/sebulba")
    with pytest.raises(ConfigError, match="not divisible by 2 actor thread\\(s\\)"):
        make_sebulba_plan(cfg, resolve_layout(cfg, jax.devices()))
    with pytest.raises(ConfigError, match="by 2 devices on purpose"):
        make_run_plan(cfg, 2, replica_label="devices on purpose")


# THE COMMAND LINE: checked before Hydra composes it (Hydra's own reports run over many lines).


@pytest.mark.parametrize(
    "argv, message",
    [
        (["system.gamme=0.9"], "unknown key system.gamme (did you mean system.gamma?)"),
        (["+system.gamme=0.9"], "unknown key system.gamme (did you mean system.gamma?)"),
        (["++system.gamme=0.9"], "unknown key system.gamme (did you mean system.gamma?)"),
        (["+system.gamma=0.9"], "+system.gamma: system.gamma is already a key; set it without"),
        (["envs=gymnax/cartpole"], "unknown key envs (did you mean env?)"),
        (
            ["env=gymnax/cartpol"],
            "env=gymnax/cartpol is not an option of group env (closest: gymnax/cartpole, ",
        ),
        (["network=nope"], "network=nope is not an option of group network (closest: "),
        (["env=null"], "env=null would leave the config without its env"),
        (["~system.gamma"], "~system.gamma: removing a config key or group is not supported"),
        (["system.gamma=("], "cannot parse the override 'system.gamma=(': extraneous input"),
        (["system.q_lr=choice(1,2)"], "system.q_lr=choice(1,2) is a sweep; run it with -m"),
        (["-m", "env=gymnax/cartpole,gymnax/acrobt"], "env=gymnax/acrobt is not an option"),
        (["-m", "system.gamme=choice(0.9,0.99)"], "unknown key system.gamme"),
        (
            ["-m", "system.epochs=2,1.5"],
            "system.epochs=1.5 must be a positive integer (in the sweep system.epochs=2,1.5)",
        ),
        (["-m", "system.gamma=interval(0.9,1.5)"], "system.gamma=1.5 must be in [0, 1] (in the"),
        (["-m", "--cfg", "job"], "use only one of --run, --multirun (-m), --cfg, --info"),
        (["--no-such-flag"], "unrecognized arguments: --no-such-flag (see --help)"),
        (["env.kwargs.x=1"], "env.kwargs.x is not in this config yet; add it with +env.kwargs.x"),
        (["system.epochs=1.5"], "system.epochs=1.5 must be a positive integer"),
        (["network=cnn", "network.actor_network.pre_torso.strides=[1,1]"], "strides has 2"),
    ],
)
def test_command_line_mistakes_are_one_line(argv, message):
    with pytest.raises(ConfigError) as raised:
        preflight(argv, "ff_ppo")
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize(
    "config, argv",
    [
        # README and configs/hydra/sweeper/ppo_optuna.yaml: Optuna sweeps.
        ("ff_ppo", ["-m", "hydra/sweeper=ppo_optuna"]),
        (
            "ff_dqn",
            [
                "-m",
                "hydra/sweeper=optuna",
                "hydra.sweeper.n_trials=20",
                "hydra.sweeper.direction=maximize",
                "system.q_lr=tag(log,interval(1e-5,1e-3))",
            ],
        ),
        ("ff_ppo", ["-m", "env=gymnax/cartpole,gymnax/acrobot", "system.epochs=choice(1,2)"]),
        ("ff_ppo", ["-m", "env=glob(gymnax/cart*)"]),
        ("ff_ppo", ["--cfg", "job", "env=gymnax/acrobot", "system.rollout_length=64"]),
        ("ff_ppo", ["--cfg", "job", "system.epochs=1.5"]),  # printing a config runs nothing
        ("ff_ppo", ["--help"]),
        ("ff_ppo", ["++env.kwargs.crash_marker=x", "+env.kwargs.other=1"]),  # a free-form mapping
        ("ff_dqn", ["network=mlp_dueling_dqn", "system.n_step=3", "arch.total_timesteps=5e6"]),
        ("ff_pqn", ["arch.sweep.key=system.q_lr", "arch.sweep.values=[1e-4,3e-4,1e-3]"]),
    ],
)
def test_valid_command_lines_pass_the_preflight(config, argv):
    preflight(argv, config)


def test_added_unknown_key_is_refused():
    with pytest.raises(ConfigError, match="unknown key system.not_a_key"):
        compose_config("ff_ppo", ["+system.not_a_key=1"])


def _one_line_exit_2(result, tmp_path) -> str:
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert not tmp_path.exists() or not any(tmp_path.iterdir())
    return lines[0]


@pytest.mark.parametrize(
    "script, overrides, line",
    [
        (
            "stoix/systems/ppo/anakin/ff_ppo.py",
            ["arch.total_num_envs=7"],
            "stoix: error: arch.total_num_envs=7 is not divisible by 2 device(s) × "
            "arch.update_batch_size=1",
        ),
        (
            "stoix/systems/ppo/anakin/ff_ppo.py",
            ["system.gamme=0.9"],
            "stoix: error: unknown key system.gamme (did you mean system.gamma?)",
        ),
        (
            "stoix/systems/ppo/anakin/ff_ppo.py",
            ["network=nope"],
            "stoix: error: network=nope is not an option of group network (closest: ",
        ),
        (
            "stoix/systems/q_learning/anakin/ff_dqn.py",
            ["arch.seed=99999999999999999999"],
            "stoix: error: arch.seed=99999999999999999999 must be an integer in [0, 1073741823]",
        ),
        (
            "stoix/systems/q_learning/anakin/ff_dqn.py",
            ["env=gymnax/pendulum"],
            "stoix: error: env=gymnax/pendulum has continuous actions but ff_dqn handles only "
            "discrete actions",
        ),
    ],
)
def test_command_line_error_is_one_line_and_exit_2(script, overrides, line, tmp_path):
    result = run_script(script, [*overrides, f"logger.base_exp_path={tmp_path}"])
    assert _one_line_exit_2(result, tmp_path).startswith(line)


def test_readme_optuna_command_reaches_its_jobs(tmp_path):
    # The sweep parses through Hydra and Optuna; its first job then refuses a budget too small
    # for one update per evaluation (the run plan's check), which ends the sweep in one line.
    result = run_script(
        "stoix/systems/q_learning/anakin/ff_dqn.py",
        [
            "-m",
            "hydra/sweeper=optuna",
            "hydra.sweeper.n_trials=1",
            "hydra.sweeper.direction=maximize",
            "system.q_lr=tag(log,interval(1e-5,1e-3))",
            "arch.total_timesteps=100",
            f"logger.base_exp_path={tmp_path}",
        ],
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith("stoix: error: arch.total_timesteps=100 is too small")
    ), result.stderr
