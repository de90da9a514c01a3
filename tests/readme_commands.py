"""README.md's shell commands as a user types them, and the tiny-budget runs that check them.

The README's ```bash blocks are read as a POSIX shell reads them: backslash continuations
joined, `# …` comments dropped, leading `NAME=value` assignments kept as the command's
environment, words split and unquoted by shlex. Each command is then run as its own process,
the way its user would run it, with a tiny budget appended after the user's own arguments (a
later Hydra override wins) and every output under a temporary folder.
"""

import json
import os
import re
import shlex
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from stoix.launch.jobs import Executor, LaunchSettings, plan_jobs, settings_from_config
from stoix.utils.entry import compose_config
from tests.helpers import ONE_DEVICE_XLA_FLAGS, REPO, SEBULBA_TINY, TEST_XLA_FLAGS, TINY

README = REPO / "README.md"
_BASH_BLOCK = re.compile(r"^```bash\n(.*?)^```", re.MULTILINE | re.DOTALL)
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
# Hydra's sweep functions: such a value is a search space, not a value a config can hold.
_SWEEP_VALUE = re.compile(r"^(choice|range|interval|tag|glob|shuffle|sort|extend_list)\(")

# The tests' XLA flags other than the device count (the compile-time optimisation level), added
# to a command that sets XLA_FLAGS itself.
BACKEND_XLA_FLAGS = " ".join(
    flag for flag in TEST_XLA_FLAGS.split() if not flag.startswith("--xla_force_host_platform")
)

# System hyperparameters that size the work of one update; each is lowered to this value where
# the system has it with a larger one and the command does not set it.
SHRINK = {
    "system.rollout_length": 8,
    "system.epochs": 1,
    "system.num_minibatches": 2,
    "system.warmup_steps": 8,
    "system.batch_size": 16,
    "system.buffer_size": 512,
    "system.gradient_steps_per_update": 2,
    "system.sequence_length": 4,
    "system.num_samples": 4,
}
# Evaluation of an env with longer episodes than LONG_EPISODE (Atari: 27,000 agent steps) stops
# after TINY_EVAL_STEPS, so an untrained policy's games do not dominate the run.
LONG_EPISODE = 1000
TINY_EVAL_STEPS = 100
# What the budget cannot shrink: trials of an Optuna sweep, bootstrap replications of a plot.
TINY_TRIALS = 2
TINY_REPS = "200"
# Keys whose value is a folder the command writes or reads: moved under the test's folder.
PATH_KEYS = ("logger.base_exp_path", "base_exp_path", "logger.checkpointing.load_path")


@dataclass(frozen=True)
class ReadmeCommand:
    """One command of a ```bash block of the README."""

    text: str  # as the README shows it: continuations joined, comment dropped, spaces collapsed
    line: int  # README line where it starts
    block: int  # which ```bash block (a later command of a block may read an earlier one's output)
    env: tuple[tuple[str, str], ...]  # leading NAME=value assignments
    argv: tuple[str, ...]  # the words after them

    @property
    def kind(self) -> str | None:
        """What runs it: system | launcher | plotting | make_train | make_test | activate."""
        argv = self.argv
        if argv[:2] == ("make", "train"):
            return "make_train"
        if argv == ("make", "test"):
            return "make_test"
        if len(argv) == 2 and argv[0] in (".", "source"):
            return "activate"
        if argv[:1] != ("python",) or len(argv) < 2:
            return None
        if argv[1].startswith("stoix/systems/") and argv[1].endswith(".py"):
            return "system"
        if argv[1] == "launcher.py":
            return "launcher"
        if argv[1:3] == ("-m", "stoix.plotting"):
            return "plotting"
        return None


def strip_comment(line: str) -> str:
    """The line without its shell comment: a `#` that starts a word outside quotes."""
    quote = None
    escaped = False
    for i, char in enumerate(line):
        if escaped:
            escaped = False
        elif quote:
            if char == quote:
                quote = None
            elif char == "\\" and quote == '"':
                escaped = True
        elif char == "\\":
            escaped = True
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


def readme_commands(markdown: str) -> list[ReadmeCommand]:
    commands = []
    for block, match in enumerate(_BASH_BLOCK.finditer(markdown)):
        first_line = markdown.count("\n", 0, match.start(1)) + 1
        pending, start = "", None
        for offset, physical in enumerate(match.group(1).splitlines()):
            code = strip_comment(physical).rstrip()
            if start is None:
                start = first_line + offset
            if code.endswith("\\"):
                pending += code[:-1] + " "
                continue
            logical, pending = pending + code, ""
            if logical.strip():
                commands.append(_command(logical, start, block))
            start = None
    return commands


def _command(logical: str, line: int, block: int) -> ReadmeCommand:
    words = shlex.split(logical)
    env = []
    while words and _ASSIGNMENT.match(words[0]):
        name, value = words.pop(0).split("=", 1)
        env.append((name, value))
    return ReadmeCommand(" ".join(logical.split()), line, block, tuple(env), tuple(words))


def key_of(argument: str) -> str:
    return argument.lstrip("+~").split("=", 1)[0]


def keys_set(arguments: Sequence[str]) -> set[str]:
    return {key_of(a) for a in arguments if "=" in a and not a.startswith("-")}


def _in_folder(value: str, folder: Path) -> str:
    return value if Path(value).is_absolute() else str(folder / value)


def with_paths_in(arguments: Sequence[str], folder: Path) -> list[str]:
    """The arguments with every relative results folder moved under `folder`."""
    moved = []
    for argument in arguments:
        key = key_of(argument)
        if key in PATH_KEYS and "=" in argument:
            argument = (
                f"{argument.split('=', 1)[0]}={_in_folder(argument.split('=', 1)[1], folder)}"
            )
        moved.append(argument)
    return moved


# SYSTEM FILES


def config_location(script: str) -> tuple[str, str]:
    """A system file's entry config: stoix/systems/<family>/<arch>/<name>.py reads
    stoix/configs/default/<arch>/<name>.yaml (stoix/utils/entry.hydra_main)."""
    path = Path(script)
    return path.stem, f"default/{path.parent.name}"


def config_overrides(arguments: Sequence[str]) -> list[str]:
    """The overrides that can be composed into one config: no flags, no Hydra settings, no
    sweep search spaces."""
    return [
        a
        for a in arguments
        if not a.startswith("-")
        and not key_of(a).startswith("hydra")
        and not _SWEEP_VALUE.match(a.split("=", 1)[-1])
    ]


def compose_command(script: str, arguments: Sequence[str]) -> DictConfig:
    name, arch_dir = config_location(script)
    return compose_config(name, config_overrides(arguments), arch_dir=arch_dir)


def tiny_overrides(script: str, arguments: Sequence[str]) -> list[str]:
    """The tiny budget for one system command, to follow its own arguments.

    What the command sets stays as it is (its envs, seeds, rollout…), except the total steps
    and the number of trials, which set the size of the run itself.
    """
    own = keys_set(arguments)
    sebulba = config_location(script)[1].endswith("sebulba")
    base = dict(o.split("=", 1) for o in (SEBULBA_TINY if sebulba else TINY))
    total_timesteps = base.pop("arch.total_timesteps", None)
    tiny = [f"{k}={v}" for k, v in base.items() if k not in own and k not in SHRINK]
    cfg = compose_command(script, [*arguments, *tiny])
    for key, small in SHRINK.items():
        value = OmegaConf.select(cfg, key, default=None)
        if key not in own and value is not None and small < value:
            tiny.append(f"{key}={small}")
    max_steps = OmegaConf.select(cfg, "env.max_episode_steps", default=None)
    if "arch.eval_max_steps" not in own and max_steps is not None and max_steps > LONG_EPISODE:
        tiny.append(f"arch.eval_max_steps={TINY_EVAL_STEPS}")
    if total_timesteps is None:
        # One update per evaluation period: the least an Anakin run accepts.
        cfg = compose_command(script, [*arguments, *tiny])
        total_timesteps = (
            cfg.arch.num_evaluation * cfg.arch.total_num_envs * cfg.system.rollout_length
        )
    tiny.append(f"arch.total_timesteps={total_timesteps}")
    if "-m" in arguments or "--multirun" in arguments:
        tiny.append(f"hydra.sweeper.n_trials={TINY_TRIALS}")
    return tiny


def process_env(command: ReadmeCommand) -> dict[str, str]:
    """The environment of a command: one CPU device (what most users have) unless the command
    sets XLA_FLAGS itself; no surrounding SLURM job or coordinator."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "JAX_COORDINATOR"))}
    env["JAX_PLATFORMS"] = "cpu"
    env["XLA_FLAGS"] = ONE_DEVICE_XLA_FLAGS
    for name, value in command.env:
        env[name] = f"{value} {BACKEND_XLA_FLAGS}" if name == "XLA_FLAGS" else value
    return env


def run(argv: Sequence[str], env: Mapping[str, str], timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(
        list(argv), cwd=REPO, env=dict(env), capture_output=True, text=True, timeout=timeout
    )


def failure(process: subprocess.CompletedProcess) -> str:
    return (
        f"exit {process.returncode}: {shlex.join(process.args)}\n"
        f"--- stdout ---\n{process.stdout[-3000:]}\n--- stderr ---\n{process.stderr[-5000:]}"
    )


def system_argv(command: ReadmeCommand, folder: Path) -> list[str]:
    """`python <system file> <its arguments> <tiny budget>`, its results under `folder`."""
    script, arguments = command.argv[1], with_paths_in(command.argv[2:], folder)
    extra = tiny_overrides(script, arguments)
    if "logger.base_exp_path" not in keys_set(arguments):
        extra.append(f"logger.base_exp_path={folder / 'results'}")
    # Trackers upload only with an account; their documented offline mode writes the same runs
    # to local files (what a later `wandb sync` / `neptune sync` uploads).
    for tracker in ("wandb", "neptune"):
        if f"logger.{tracker}.use=True" in arguments:
            extra.append(f"logger.{tracker}.mode=offline")
    return [sys.executable, script, *arguments, *extra]


def expected_runs(command: ReadmeCommand) -> int:
    """metrics.json files a system command writes: one per run, one run per Optuna trial."""
    return TINY_TRIALS if {"-m", "--multirun"} & set(command.argv) else 1


def check_results(folder: Path, files: int) -> list[Path]:
    """Every run wrote a marl-eval file whose runs (seeds) each logged an evaluation."""
    found = sorted(folder.rglob("metrics.json"))
    assert len(found) == files, found
    for path in found:
        document = json.loads(path.read_text())
        runs = [
            run
            for env in document.values()
            for task in env.values()
            for system in task.values()
            for run in system.values()
        ]
        assert runs and all(any(k.startswith("step_") for k in run) for run in runs), path
    return found


def distributed_argvs(command: ReadmeCommand, folder: Path) -> list[list[str]]:
    """The by-hand multi-host command as each of its processes runs it (the README: "the same
    command on each host, with its own process_id"), on this machine's loopback: the
    coordinator address of the README's cluster does not exist here."""
    argv = system_argv(command, folder)
    settings = dict(a.split("=", 1) for a in argv if a.startswith("arch.distributed."))
    processes = int(settings["arch.distributed.num_processes"])
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return [
        [
            *argv,
            f"arch.distributed.coordinator_address=127.0.0.1:{port}",
            f"arch.distributed.process_id={rank}",
        ]
        for rank in range(processes)
    ]


# LAUNCHER


def launcher_settings(arguments: Sequence[str]) -> LaunchSettings:
    with initialize_config_dir(config_dir=str(REPO / "stoix/configs/launcher"), version_base="1.3"):
        return settings_from_config(compose(config_name="launcher", overrides=list(arguments)))


def hydra_list(items: Sequence[str]) -> str:
    return "[" + ",".join(json.dumps(item) for item in items) + "]"


def launcher_argv(command: ReadmeCommand, folder: Path, dry_run: bool) -> tuple[list[str], int]:
    """The launcher command with its results under `folder`, and its number of jobs.

    dry_run: list the jobs (each job's config composed and checked) and submit nothing.
        Otherwise (the local executor) a tiny budget joins every job's overrides.
    """
    arguments = with_paths_in(command.argv[2:], folder)
    if "base_exp_path" not in keys_set(arguments):
        arguments.append(f"base_exp_path={folder / 'results' / 'launcher'}")
    settings = launcher_settings(arguments)
    jobs = plan_jobs(settings)
    if dry_run:
        return [sys.executable, "launcher.py", *arguments, "dry_run=True"], len(jobs)
    assert settings.executor is Executor.local, command.text
    # One overrides list reaches every system of the sweep: only the arch-level budget, sized
    # for the system whose update takes the most steps.
    tiny = [o for o in TINY if key_of(o) not in keys_set(settings.overrides)]
    steps = 0
    for job in jobs:
        cfg = compose_config(
            job.system.config_name,
            [*job.arguments, *tiny],
            arch_dir=f"default/{job.system.arch}",
        )
        steps = max(
            steps, cfg.arch.num_evaluation * cfg.arch.total_num_envs * cfg.system.rollout_length
        )
    overrides = [*settings.overrides, *tiny, f"arch.total_timesteps={steps}"]
    argv = [sys.executable, "launcher.py", *arguments, f"overrides={hydra_list(overrides)}"]
    return argv, len(jobs)


def runs_locally(command: ReadmeCommand) -> bool:
    """A launcher command that runs its jobs on this machine (the local executor, no dry run).
    Read from its words: composing its config is what its test checks."""
    values = dict(a.split("=", 1) for a in command.argv[2:] if "=" in a)
    return values.get("executor") == Executor.local.value and values.get("dry_run") != "True"


# PLOTTING


def plotting_argv(command: ReadmeCommand, folder: Path) -> tuple[list[str], Path]:
    """`python -m stoix.plotting` on folders under `folder`, with few bootstrap replications.
    Also returns the output folder."""
    arguments = list(command.argv[3:])
    out = None
    for i, argument in enumerate(arguments):
        if argument in ("-o", "--out"):
            arguments[i + 1] = out = _in_folder(arguments[i + 1], folder)
        elif not argument.startswith("-") and (i == 0 or not arguments[i - 1].startswith("-")):
            arguments[i] = _in_folder(argument, folder)
    assert out is not None, command.text
    return [sys.executable, "-m", "stoix.plotting", *arguments, "--reps", TINY_REPS], Path(out)


# MAKE


def make_train_argv(folder: Path) -> list[str]:
    """`make train` with the tiny budget in ARGS (the README's way to pass overrides).

    `-o <stamp>`: make must not rebuild .venv here (the stamp is older than pyproject.toml
    whenever that file was edited since), so only the train recipe runs.
    """
    makefile = (REPO / "Makefile").read_text()
    (script,) = re.findall(r"^train:.*\n\t.*?(stoix/systems/\S+\.py)", makefile, re.MULTILINE)
    version = subprocess.run(
        ["python3", "-c", "import sys; print(f'{sys.version_info[0]}{sys.version_info[1]}')"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    arguments = [*tiny_overrides(script, []), f"logger.base_exp_path={folder / 'results'}"]
    return ["make", "-o", f".venv/.installed-{version}", "train", f"ARGS={shlex.join(arguments)}"]
