"""Every command of README.md's ```bash blocks runs as a user would type it, with a tiny budget.

The README itself is parsed (tests/readme_commands.py), so a command added to it is run here
without touching this file, and a command this file cannot run fails the accounting test. Each
runs as its own process on ONE CPU device (what most users have), unless its line sets
XLA_FLAGS. Heavy commands run in the slow tier (`make bench`); CI checks their configs compose.
Launcher commands also run as a dry run (every job's config composed and checked): on SLURM
that is all that can run here, and the real SLURM path is tests/test_launcher.py -m slurm.
"""

import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from stoix.utils.config import make_run_plan
from tests.helpers import REPO
from tests.readme_commands import (
    README,
    ReadmeCommand,
    check_results,
    compose_command,
    distributed_argvs,
    expected_runs,
    failure,
    launcher_argv,
    make_train_argv,
    plotting_argv,
    process_env,
    readme_commands,
    run,
    runs_locally,
    system_argv,
)

COMMANDS = readme_commands(README.read_text())

# System commands run in the slow tier, and why: heavy to compile or run on a CPU, or the same
# config already runs in the default tier (mostly on two devices: the system code is the same on
# one). CI still composes their configs and plans their runs on one device (below). Times: the
# tiny run with an empty compilation cache, on 2 busy cores.
PPO = "python stoix/systems/ppo/anakin/ff_ppo.py"
Q = "python stoix/systems/q_learning/anakin"
SEBULBA_PPO = "python stoix/systems/ppo/sebulba/ff_ppo.py"


def _runs_it(test_file: str) -> str:
    return f"tests/{test_file} runs this config in the default tier"


SLOW = {
    PPO: "`make train` runs this very command line in the default tier",
    f"{PPO} env=gymnax/acrobot system.rollout_length=64": "ff_ppo as `make train`, on another "
    "gymnax task (tests/test_wrappers.py builds every gymnax task)",
    f"{PPO} env=gymnax/breakout network=cnn": "PPO's CNN compiles for ~60 s; the CNN torso runs "
    "in the default tier under DQN and PQN",
    f"{PPO} arch.num_seeds=4": "tests/test_runs.py runs 4 vmapped PPO seeds in the default tier",
    "python stoix/systems/ppo/anakin/ff_ppo_continuous.py env=gymnax/pendulum": _runs_it(
        "test_systems_smoke.py"
    ),
    "python stoix/systems/ppo/anakin/ff_ppo_continuous.py env=brax/inverted_pendulum": "brax "
    "compiles for ~60 s; tests/test_suite_adapters.py checks the brax adapter",
    f"{Q}/ff_dqn.py": "tests/test_learning.py trains this config to its full budget",
    f"{Q}/ff_dqn.py network=mlp_dueling_dqn system.n_step=3": "tests/test_systems_smoke.py runs "
    "DQN with this network and n_step in the default tier",
    f"{Q}/ff_pqn.py": "tests/test_learning.py trains this config to its full budget",
    f"{Q}/ff_pqn.py system=q_learning/ff_pqn_atari network=visual_pqn_atari env=envpool/pong "
    "arch.total_num_envs=128 arch.total_timesteps=1e7": "128 Atari envs and a Nature CNN on a "
    "CPU: ~3 min even with a tiny budget; tests/test_envpool.py runs PQN on Pong with 4 envs",
    f"{Q}/ff_pqn_vdn.py": "SMAX compiles for ~3 min; " + _runs_it("test_pqn_vdn.py"),
    f"{Q}/rec_pqn.py": _runs_it("test_systems_smoke.py"),
    f"{Q}/rec_pqn.py network=lstm_pqn env=gymnax/cartpole": "tests/test_systems_smoke.py runs "
    "rec_pqn and tests/test_rec_pqn.py the LSTM network in the default tier",
    f"{Q}/ff_pqn_continuous.py": "brax compiles for ~80 s; tests/test_pqn_continuous.py runs "
    "the system in the default tier",
    "python stoix/systems/sac/anakin/ff_sac.py": _runs_it("test_off_policy.py"),
    "python stoix/systems/ddpg/anakin/ff_td3.py env=brax/inverted_pendulum": "brax compiles for "
    "~2 min; tests/test_off_policy.py runs TD3 in the default tier",
    "python stoix/systems/sac/anakin/ff_sac_discrete.py": _runs_it("test_off_policy.py"),
    "python stoix/systems/sac/anakin/ff_sac.py env=brax/hopper "
    "system.normalise_observations=True": "brax hopper compiles for ~80 s with a warm cache",
    "python stoix/systems/mpo/anakin/ff_mpo_continuous.py": _runs_it("test_mpo.py"),
    "python stoix/systems/awr/anakin/ff_awr.py": _runs_it("test_awr.py"),
    "python stoix/systems/vmpo/anakin/ff_vmpo.py": _runs_it("test_policy_gradient.py"),
    "python stoix/systems/ppo/anakin/ff_dpo_continuous.py": _runs_it("test_policy_gradient.py"),
    "python stoix/systems/policy_gradient/anakin/ff_reinforce.py": _runs_it(
        "test_policy_gradient.py"
    ),
    f"{SEBULBA_PPO} arch=sebulba env=envpool/cartpole": "tests/test_sebulba_layouts.py runs "
    "this config on one device in the default tier",
    "python stoix/systems/impala/sebulba/ff_impala.py": "tests/test_sebulba_layouts.py runs "
    "this config on one device in the default tier",
    f"{SEBULBA_PPO} env=gymnasium/cartpole env.scenario=Acrobot-v1 env.task_name=acrobot": (
        "the gymnasium command before it runs in the default tier"
    ),
    f"{SEBULBA_PPO} env=envpool/pong network=visual_ac_atari": "Atari and a CNN on a CPU: "
    "~80 s; tests/test_sebulba.py runs Pong in the default tier",
    f"XLA_FLAGS=--xla_force_host_platform_device_count=2 {SEBULBA_PPO} "
    "arch.actor.device_ids=[0] arch.learner.device_ids=[1] arch.actor.actor_per_device=2": (
        "tests/test_sebulba.py runs this layout (two actor threads on device 0, the learner on "
        "1) in the default tier"
    ),
    f"{PPO} -m hydra/sweeper=ppo_optuna": "one run per trial (~75 s for 2); tests/test_sweeps.py "
    "runs this sweep with 3 trials in the default tier",
    f"{Q}/ff_dqn.py -m hydra/sweeper=optuna hydra.sweeper.n_trials=20 "
    "hydra.sweeper.direction=maximize 'system.q_lr=tag(log,interval(1e-5,1e-3))' "
    "'system.n_step=choice(1,3,5)'": "one compilation per trial (~90 s for 2); "
    "tests/test_sweeps.py runs an Optuna sweep in the default tier",
    f"{PPO} arch.distributed.enabled=True arch.distributed.coordinator_address=10.0.0.1:1234 "
    "arch.distributed.num_processes=2 arch.distributed.process_id=0": "two processes (~75 s); "
    "tests/test_multihost.py runs two processes on loopback in the default tier",
}
# Commands that cannot run inside this test suite, and why.
NOT_RUN = {
    "make test": "it runs this suite (CI runs it as the README says)",
}
TIMEOUT_S = 600
SLOW_TIMEOUT_S = 3000


@dataclass(frozen=True)
class Case:
    command: ReadmeCommand
    action: str  # run | run_on_each_host | dry_run | sweep_locally | plot | make_train | activate
    slow_reason: str | None = None

    @property
    def id(self) -> str:
        words = list(self.command.argv)
        if self.command.kind == "system":
            words[:2] = [f"{Path(words[1]).parent.name}/{Path(words[1]).stem}"]
        return f"L{self.command.line}-{self.action}-{' '.join(words)}"[:110]


def _feeds_a_plot(command: ReadmeCommand) -> bool:
    """A run or sweep whose results a later plotting command of its block reads: the plotting
    case runs it first (running it on its own too would repeat a whole sweep)."""
    return command.kind in ("system", "launcher") and any(
        c.kind == "plotting" and c.block == command.block and c.line > command.line
        for c in COMMANDS
    )


def cases_of(command: ReadmeCommand) -> list[Case]:
    kind = command.kind
    if kind == "system":
        distributed = any(a.startswith("arch.distributed.process_id=") for a in command.argv)
        action = "run_on_each_host" if distributed else "run"
        if _feeds_a_plot(command):
            return []
        return [Case(command, action, SLOW.get(command.text))]
    if kind == "launcher":
        dry = [Case(command, "dry_run")]
        if not runs_locally(command) or _feeds_a_plot(command):
            return dry
        return [*dry, Case(command, "sweep_locally", "a sweep of several runs")]
    if kind == "plotting":
        return [Case(command, "plot", "a sweep of several runs, then bootstrapped statistics")]
    if kind in ("make_train", "activate"):
        return [Case(command, kind)]
    return []


CASES = [case for command in COMMANDS for case in cases_of(command)]


def test_every_readme_command_is_accounted_for():
    assert COMMANDS, "no ```bash block found in README.md"
    unknown = [
        f"README.md:{c.line}: {c.text}"
        for c in COMMANDS
        if c.text not in NOT_RUN
        and not any(case.command == c for case in CASES)
        and not _feeds_a_plot(c)
    ]
    assert not unknown, "commands this test does not know how to run:\n" + "\n".join(unknown)
    texts = {c.text for c in COMMANDS}
    stale = sorted((set(SLOW) | set(NOT_RUN)) - texts)
    assert not stale, "entries for commands no longer in README.md:\n" + "\n".join(stale)


def test_slow_commands_compose_and_plan_on_one_device():
    """What CI checks of the slow tier's commands: their configs, as the user wrote them."""
    for case in CASES:
        if case.command.kind != "system" or case.slow_reason is None:
            continue
        script, arguments = case.command.argv[1], case.command.argv[2:]
        cfg = compose_command(script, arguments)
        if "/anakin/" in script:
            make_run_plan(cfg, num_devices=1)


def _run_system(command: ReadmeCommand, folder: Path, timeout: float) -> None:
    argv = system_argv(command, folder)
    process = run(argv, process_env(command), timeout)
    assert process.returncode == 0, failure(process)
    found = check_results(folder, expected_runs(command))
    if "-m" in command.argv:
        assert list(folder.rglob("optimization_results.yaml")), failure(process)
    if "logger.wandb.use=True" in command.argv:
        assert all(list(f.parent.glob("wandb/offline-run-*")) for f in found), found
    if "logger.neptune.use=True" in command.argv:
        assert all((f.parent / "neptune").is_dir() for f in found), found


def _run_on_each_host(command: ReadmeCommand, folder: Path, timeout: float) -> None:
    try:
        # gloo binds each process's collectives to the address its host name resolves to.
        socket.getaddrinfo(socket.gethostname(), None)
    except OSError as err:
        pytest.skip(f"this machine's host name does not resolve ({err}); gloo cannot connect")
    processes = [
        subprocess.Popen(
            argv,
            env=process_env(command),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for argv in distributed_argvs(command, folder)
    ]
    try:
        outputs = [p.communicate(timeout=timeout) for p in processes]
    finally:
        for p in processes:
            p.kill()
    for p, (out, err) in zip(processes, outputs, strict=True):
        assert p.returncode == 0, f"{out[-2000:]}\n{err[-4000:]}"
    check_results(folder, 1)


def _dry_run(command: ReadmeCommand, folder: Path, timeout: float) -> None:
    argv, jobs = launcher_argv(command, folder, dry_run=True)
    process = run(argv, process_env(command), timeout)
    assert process.returncode == 0, failure(process)
    assert len(process.stdout.strip().splitlines()) == jobs, failure(process)
    assert not folder.exists() or not any(folder.rglob("*")), "a dry run wrote files"


def _sweep_locally(command: ReadmeCommand, folder: Path, timeout: float) -> None:
    argv, jobs = launcher_argv(command, folder, dry_run=False)
    process = run(argv, process_env(command), timeout)
    assert process.returncode == 0, failure(process)
    assert process.stdout.count("[done]") == jobs, failure(process)
    check_results(folder, jobs)


def _plot(command: ReadmeCommand, folder: Path, timeout: float) -> None:
    # The plot reads what the commands before it in its block wrote (a sweep's results).
    for earlier in COMMANDS:
        if earlier.block == command.block and earlier.line < command.line:
            if earlier.kind == "launcher":
                _sweep_locally(earlier, folder, timeout)
            else:
                _run_system(earlier, folder, timeout)
    argv, out = plotting_argv(command, folder)
    process = run(argv, process_env(command), timeout)
    assert process.returncode == 0, failure(process)
    assert "Traceback" not in process.stderr, failure(process)
    assert (out / "summary.csv").is_file(), failure(process)
    assert len(list(out.glob("*.png"))) >= 4, sorted(out.iterdir())


def _make_train(command: ReadmeCommand, folder: Path, timeout: float) -> None:
    process = run(make_train_argv(folder), process_env(command), timeout)
    assert process.returncode == 0, failure(process)
    check_results(folder, 1)


def _activate(command: ReadmeCommand, folder: Path, timeout: float) -> None:
    # Sourced, it puts the venv's python first on PATH: the `python` of the later commands.
    process = run(
        ["bash", "-c", f"{command.text} && python -c 'import sys; print(sys.prefix)'"],
        process_env(command),
        timeout,
    )
    assert process.returncode == 0, failure(process)
    venv = (REPO / command.argv[1]).parent.parent
    assert Path(process.stdout.strip()) == venv, failure(process)


ACTIONS = {
    "run": _run_system,
    "run_on_each_host": _run_on_each_host,
    "dry_run": _dry_run,
    "sweep_locally": _sweep_locally,
    "plot": _plot,
    "make_train": _make_train,
    "activate": _activate,
}


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(
            case, id=case.id, marks=[pytest.mark.slow] if case.slow_reason is not None else []
        )
        for case in CASES
    ],
)
def test_readme_command_runs(case: Case, tmp_path: Path) -> None:
    timeout = TIMEOUT_S if case.slow_reason is None else SLOW_TIMEOUT_S
    ACTIONS[case.action](case.command, tmp_path, timeout)
