"""Sweeps of system files as submitit jobs (SLURM job arrays or local processes).

A sweep is every (system, env, grid entry, seed) combination; each becomes one job that composes
the system's config exactly as its command line would and calls its `run_experiment` in a fresh
Python process. All jobs share one `logger.base_exp_path`, so a sweep is one results tree.
`launcher.py` (repository root) is the command line; `stoix/configs/launcher/` its config.
"""

import enum
import importlib
import math
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

REPO = Path(__file__).resolve().parent.parent.parent
SYSTEMS_DIR = REPO / "stoix" / "systems"
ARCHITECTURES = ("anakin", "sebulba")
SUBMITIT_DIR = "_submitit"


class LaunchError(Exception):
    """A sweep that cannot be submitted as asked; its message is one line for the user."""


class Executor(enum.Enum):
    slurm = "slurm"
    local = "local"


@dataclass
class SlurmSettings:
    time: str = "01:00:00"
    partition: str | None = None
    gpus_per_node: int | None = 1
    cpus_per_task: int = 8
    mem_gb: int | None = None
    account: str | None = None
    qos: str | None = None
    nodes: int = 1
    tasks_per_node: int = 1
    max_parallel: int | None = None
    requeue: bool = True
    setup: List[str] = field(default_factory=list)
    additional_parameters: Dict[str, Any] = field(default_factory=dict)


@dataclass
class LocalSettings:
    max_parallel: int = 1
    timeout_min: int = 1440


@dataclass
class LaunchSettings:
    """The launcher's config (stoix/configs/launcher/launcher.yaml), type-checked."""

    systems: List[str] = field(default_factory=list)
    envs: List[str] = field(default_factory=list)
    seeds: List[int] = field(default_factory=list)
    overrides: List[str] = field(default_factory=list)
    grid: List[List[str]] = field(default_factory=list)
    base_exp_path: str = "results/launcher"
    executor: Executor = Executor.slurm
    dry_run: bool = False
    wait: bool = False
    slurm: SlurmSettings = field(default_factory=SlurmSettings)
    local: LocalSettings = field(default_factory=LocalSettings)


def settings_from_config(cfg: DictConfig) -> LaunchSettings:
    """Checks types and key names against `LaunchSettings`: a typo is an error, not a no-op."""
    try:
        merged = OmegaConf.merge(OmegaConf.structured(LaunchSettings), cfg)
        settings = OmegaConf.to_object(merged)
    except OmegaConfBaseException as err:
        raise LaunchError(f"launcher config: {_first_line(str(err))}") from None
    assert isinstance(settings, LaunchSettings)
    return settings


@dataclass(frozen=True)
class SystemFile:
    """A system file and how to reach its config and `run_experiment`."""

    path: str  # relative to the repository root, as the user's command line would name it
    module: str
    config_name: str
    arch: str

    @classmethod
    def from_path(cls, path: str) -> "SystemFile":
        candidates = [Path(path)] if Path(path).is_absolute() else [Path.cwd() / path, REPO / path]
        found = next((c.resolve() for c in candidates if c.is_file()), None)
        if found is None:
            raise LaunchError(f"system file '{path}' does not exist")
        if found.suffix != ".py" or not found.is_relative_to(SYSTEMS_DIR):
            raise LaunchError(f"system file '{path}' is not a .py file under stoix/systems/")
        arch = found.parent.name
        if arch not in ARCHITECTURES:
            raise LaunchError(
                f"system file '{path}' is in '{arch}/', expected one of: {', '.join(ARCHITECTURES)}"
            )
        relative = found.relative_to(REPO)
        return cls(
            path=relative.as_posix(),
            module=".".join(relative.with_suffix("").parts),
            config_name=found.stem,
            arch=arch,
        )


@dataclass(frozen=True)
class Job:
    """One run: a system file on one env and seed, with the sweep and grid entry overrides."""

    system: SystemFile
    env: str
    seed: int
    base_exp_path: str
    overrides: Tuple[str, ...] = ()
    grid_entry: Tuple[str, ...] = ()

    @property
    def arguments(self) -> Tuple[str, ...]:
        return (
            f"env={self.env}",
            f"arch.seed={self.seed}",
            f"logger.base_exp_path={self.base_exp_path}",
            *self.overrides,
            *self.grid_entry,
        )

    @property
    def label(self) -> str:
        grid = f" {' '.join(self.grid_entry)}" if self.grid_entry else ""
        return (
            f"{self.system.config_name} ({self.system.arch}) env={self.env} seed={self.seed}{grid}"
        )

    def command_line(self) -> str:
        return shlex.join(["python", self.system.path, *self.arguments])

    def compose(self) -> DictConfig:
        from hydra.core.global_hydra import GlobalHydra

        from stoix.utils.entry import compose_config

        # Inside launcher.py's own @hydra.main, Hydra is initialised and would refuse a second
        # initialisation for the system's config directory; it gets its own back afterwards.
        global_hydra = GlobalHydra.instance()
        launcher_hydra = global_hydra.hydra
        global_hydra.clear()
        try:
            return compose_config(
                self.system.config_name, self.arguments, arch_dir=f"default/{self.system.arch}"
            )
        finally:
            GlobalHydra.instance().hydra = launcher_hydra


def run_job(job: Job) -> float:
    """What a local job runs; SLURM jobs run `ResumableRun` (stoix/launch/resumable_job.py)."""
    module = importlib.import_module(job.system.module)
    return float(module.run_experiment(job.compose()))


def plan_jobs(settings: LaunchSettings) -> List[Job]:
    """Every job of the sweep, ordered so that one system's runs follow each other: with one job
    at a time, the later seeds reuse the first one's compiled programs (JAX's persistent cache)."""
    for key in ("systems", "envs", "seeds"):
        if not getattr(settings, key):
            raise LaunchError(f"'{key}' is empty: the sweep has no jobs")
    systems = [SystemFile.from_path(path) for path in settings.systems]
    base = str(Path(settings.base_exp_path).expanduser().resolve())
    grid = [tuple(entry) for entry in settings.grid] or [()]
    # A SLURM job that requeues itself after a time-out or preemption resumes from a checkpoint.
    requeue = settings.executor is Executor.slurm and settings.slurm.requeue
    resumable = ("logger.checkpointing.save_model=True",) if requeue else ()
    overrides = tuple(settings.overrides) + multihost_overrides(settings, systems) + resumable
    return [
        Job(system, env, seed, base, overrides, entry)
        for system in systems
        for env in settings.envs
        for entry in grid
        for seed in settings.seeds
    ]


def multihost_overrides(settings: LaunchSettings, systems: Sequence[SystemFile]) -> Tuple[str, ...]:
    """What makes a SLURM job of several tasks ONE run over all their devices.

    srun starts the job's function once per task; without `arch.distributed` each task would be
    an independent copy of the run writing the same results. jax reads the process count, rank
    and coordinator from SLURM's variables and gives each task the GPU of its node-local rank, so
    a task either drives one GPU or (one task per node) all of its node's GPUs.
    """
    slurm = settings.slurm
    if slurm.nodes < 1 or slurm.tasks_per_node < 1:
        raise LaunchError(
            f"slurm.nodes={slurm.nodes} and slurm.tasks_per_node={slurm.tasks_per_node} must "
            "both be at least 1"
        )
    if settings.executor is not Executor.slurm or slurm.nodes * slurm.tasks_per_node == 1:
        return ()
    for system in systems:
        if system.arch != "anakin":
            raise LaunchError(
                f"{system.path}: only Anakin systems run across processes; set slurm.nodes=1 "
                "and slurm.tasks_per_node=1 for Sebulba"
            )
    gpus = slurm.gpus_per_node or 0
    if gpus and slurm.tasks_per_node not in (1, gpus):
        raise LaunchError(
            f"slurm.tasks_per_node={slurm.tasks_per_node} must be 1 (one process drives all "
            f"of a node's GPUs) or slurm.gpus_per_node={gpus} (one process per GPU)"
        )
    extra = ["arch.distributed.enabled=True"]
    if gpus > 1 and slurm.tasks_per_node == 1:
        extra.append(f"arch.distributed.local_device_ids=[{','.join(map(str, range(gpus)))}]")
    return tuple(extra)


def validate_jobs(jobs: Sequence[Job]) -> None:
    """Composes and checks every job's config, so a typo or a bad value fails here rather than
    in a queued job."""
    from hydra.errors import HydraException

    from stoix.errors import ConfigError
    from stoix.utils.schema import validate_config

    for job in jobs:
        try:
            validate_config(job.compose())
        except (HydraException, OmegaConfBaseException, ConfigError) as err:
            raise LaunchError(f"{job.label}: {_first_line(str(err))}") from None


def slurm_minutes(text: str) -> int:
    """SLURM's --time formats (minutes, MM:SS, HH:MM:SS, D-HH[:MM[:SS]]) as whole minutes;
    submitit needs minutes to time its own requeue signal."""
    try:
        days, _, clock = text.strip().rpartition("-")
        parts = [int(part) for part in clock.split(":")]
        if days:
            hours, minutes, seconds = (parts + [0, 0])[:3]
        elif len(parts) == 3:
            hours, minutes, seconds = parts
        elif len(parts) == 2:
            hours, (minutes, seconds) = 0, parts
        elif len(parts) == 1:
            hours, minutes, seconds = 0, parts[0], 0
        else:
            raise ValueError
        total = (int(days or 0) * 24 + hours) * 60 + minutes + seconds / 60
    except ValueError:
        raise LaunchError(
            f"slurm.time={text!r} is not minutes, MM:SS, HH:MM:SS or D-HH:MM:SS"
        ) from None
    if total <= 0:
        raise LaunchError(f"slurm.time={text!r} must be positive")
    return math.ceil(total)


def make_executor(settings: LaunchSettings, folder: Path) -> Any:
    """A submitit executor for the chosen cluster, its parameters checked before any submission."""
    import submitit

    try:
        if settings.executor is Executor.local:
            executor = submitit.AutoExecutor(folder=folder, cluster="local")
            executor.update_parameters(timeout_min=settings.local.timeout_min, name="stoix")
            return executor
        slurm = settings.slurm
        # Checked before submitit is touched: a bad value must not depend on sbatch being found.
        timeout_min = slurm_minutes(slurm.time)
        executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
        optional = {
            "slurm_partition": slurm.partition,
            "mem_gb": slurm.mem_gb,
            "slurm_account": slurm.account,
            "slurm_qos": slurm.qos,
            "slurm_array_parallelism": slurm.max_parallel,
            # 0 GPUs is said by not asking: clusters without GPU GRES reject --gpus-per-node=0.
            "gpus_per_node": slurm.gpus_per_node or None,
        }
        executor.update_parameters(
            name="stoix",
            timeout_min=timeout_min,
            cpus_per_task=slurm.cpus_per_task,
            nodes=slurm.nodes,
            tasks_per_node=slurm.tasks_per_node,
            slurm_setup=list(slurm.setup),
            slurm_additional_parameters=dict(slurm.additional_parameters),
            **{key: value for key, value in optional.items() if value is not None},
        )
        return executor
    except (RuntimeError, ValueError) as err:
        # submitit raises RuntimeError where sbatch/srun are missing, ValueError for bad parameters.
        raise LaunchError(f"{settings.executor.value} executor: {_first_line(str(err))}") from None


@dataclass(frozen=True)
class JobOutcome:
    job: Job
    job_id: str
    final_return: float | None = None
    error: str | None = None
    log: Path | None = None

    def describe(self) -> str:
        if self.error is None:
            return f"[done]   {self.job.label}: final return {self.final_return:.3f}"
        return f"[failed] {self.job.label}: {self.error} (log: {self.log})"


def submit_array(executor: Any, jobs: Sequence[Job], requeue: bool = False) -> List[Any]:
    """The whole sweep as one submission (a SLURM job array)."""
    if requeue:
        from stoix.launch.resumable_job import ResumableRun

        return executor.map_array(ResumableRun(), list(jobs))
    return executor.map_array(run_job, list(jobs))


def _submit_to_slurm(executor: Any, jobs: Sequence[Job], requeue: bool) -> List[Any]:
    from submitit.core.utils import FailedJobError

    try:
        return submit_array(executor, jobs, requeue)
    except FailedJobError as err:
        # One sbatch call submits the whole array, so when it fails nothing was queued.
        lines = [line for line in str(err).strip().splitlines() if line.strip()]
        raise LaunchError(f"sbatch failed: {lines[-1] if lines else err}") from None


def run_throttled(executor: Any, jobs: Sequence[Job], max_parallel: int) -> List[Any]:
    """Runs at most `max_parallel` jobs at a time and waits for all; the local executor has no
    array parallelism of its own, so a plain array would start every job at once."""
    if max_parallel >= len(jobs):
        handles = submit_array(executor, jobs)
        _wait_all(handles)
        return handles
    handles: List[Any] = []
    try:
        for job in jobs:
            while sum(not handle.done() for handle in handles) >= max_parallel:
                time.sleep(0.5)
            handles.append(executor.submit(run_job, job))
        _wait_all(handles)
    except KeyboardInterrupt:
        for handle in handles:
            if not handle.done():
                handle.cancel(check=False)
        raise
    return handles


def _wait_all(handles: Sequence[Any]) -> None:
    while not all(handle.done() for handle in handles):
        time.sleep(0.5)


def collect(jobs: Sequence[Job], handles: Sequence[Any]) -> List[JobOutcome]:
    """Each job's final return or its error (the last line of its traceback)."""
    from submitit.core.utils import FailedJobError, UncompletedJobError

    outcomes = []
    for job, handle in zip(jobs, handles, strict=True):
        try:
            # A multi-host job has one result per task; they are the same run, process 0 first.
            final_return = float(handle.results()[0])
            outcomes.append(JobOutcome(job, handle.job_id, final_return=final_return))
        except (FailedJobError, UncompletedJobError) as err:
            outcomes.append(
                JobOutcome(job, handle.job_id, error=_job_error(str(err)), log=handle.paths.stderr)
            )
    return outcomes


def launch(settings: LaunchSettings) -> int:
    """Plans, checks and submits the sweep; returns the exit status (1 when a job failed).

    Raises:
        LaunchError: before anything is submitted, when the sweep or a job's config is invalid.
    """
    jobs = plan_jobs(settings)
    validate_jobs(jobs)
    base = Path(jobs[0].base_exp_path)
    if settings.dry_run:
        for job in jobs:
            print(job.command_line())
        print(
            f"# {len(jobs)} jobs, results in {base} (dry run: nothing submitted)", file=sys.stderr
        )
        return 0
    executor = make_executor(settings, base / SUBMITIT_DIR / "%j")
    if settings.executor is Executor.local:
        print(f"Running {len(jobs)} jobs locally; results in {base}", flush=True)
        handles = run_throttled(executor, jobs, settings.local.max_parallel)
    else:
        handles = _submit_to_slurm(executor, jobs, settings.slurm.requeue)
        print(f"Submitted {len(jobs)} jobs as SLURM array {handles[0].job_id.split('_')[0]}")
        print(f"Results: {base}\nLogs: {base / SUBMITIT_DIR}", flush=True)
        if not settings.wait:
            for job, handle in zip(jobs, handles, strict=True):
                print(f"  {handle.job_id}: {job.label}")
            return 0
        _wait_all(handles)
    outcomes = collect(jobs, handles)
    for outcome in outcomes:
        print(outcome.describe())
    failed = sum(outcome.error is not None for outcome in outcomes)
    print(f"{len(outcomes) - failed}/{len(outcomes)} jobs finished; results in {base}")
    return 1 if failed else 0


def main(cfg: DictConfig) -> int:
    """`launcher.py`'s body: configuration problems are one line on stderr and status 2."""
    try:
        return launch(settings_from_config(cfg))
    except LaunchError as err:
        print(f"launcher: error: {err}", file=sys.stderr)
        return 2


def _first_line(message: str) -> str:
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    return lines[0] if lines else message


def _job_error(message: str) -> str:
    # submitit wraps the job's traceback between dashed rulers; its last line names the error.
    sections = message.split("----------------------")
    trace = sections[1] if len(sections) >= 3 else message
    lines = [line.strip() for line in trace.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no result (killed or timed out?)"
