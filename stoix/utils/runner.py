"""The one Anakin experiment loop: set-up → learn → evaluate → log → checkpoint.

A system supplies only what is particular to it (`AnakinSystem.build` returns its `SystemParts`);
everything here is shared. Parallel axes, outermost first:

* devices — `jax.shard_map` over a 1-D mesh named "device"; gradients are averaged over it;
* seeds — `vmap` named "seed"; independent runs, never averaged together;
* update batch — `vmap` named "batch"; gradients are averaged over it (see `pmean_replicas`);
* envs — `vmap` inside the system's rollout.

Learner-state leaves are laid out [devices, seeds, update_batch, ...]. Python sees the state
once per evaluation period; everything within a period is one compiled program.
"""

import sys
import time
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, NamedTuple, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from omegaconf import DictConfig, OmegaConf

from stoix.base_types import LearnerState, Params, PRNGKey, TrainMetrics
from stoix.evaluator.anakin import EvalActFn, EvalOutput, make_evaluator
from stoix.utils.config import ConfigError, RunPlan, make_run_plan, to_plain
from stoix.utils.distributed import (
    any_process,
    broadcast_text,
    initialise_distributed,
    is_primary,
    to_global,
    to_host,
)
from stoix.utils.env_factory import make_env
from stoix.utils.results_path import check_results_path, writes_to
from stoix.utils.schema import validate_config
from stoix.utils.stopping import RunStopped, StopRequest, stop_on_signals
from stoix.utils.timing import CompileCounter
from stoix.wrappers.episode import EpisodeEnv

if TYPE_CHECKING:  # the logger imports the trackers' settings; runs import it when they start
    from stoix.utils.logger import RunIdentity, StoixLogger

DEVICE_AXIS = "device"
SEED_AXIS = "seed"
BATCH_AXIS = "batch"


# The named axes that replicas of one seed are spread over, as bound while `learn` is traced:
# the update-batch axis is mapped only when it has more than one slot (see `map_leading_axis`).
_replica_axes: ContextVar[Tuple[str, ...]] = ContextVar(
    "replica_axes", default=(BATCH_AXIS, DEVICE_AXIS)
)


def pmean_replicas(tree: Any) -> Any:
    """Averages gradients (or statistics) over the update batch and the devices of one seed."""
    return jax.lax.pmean(tree, axis_name=_replica_axes.get())


@contextmanager
def replicas_over(axes: Tuple[str, ...]) -> Iterator[None]:
    """Binds the axes `pmean_replicas` averages over while a learner function is traced."""
    token = _replica_axes.set(axes)
    try:
        yield
    finally:
        _replica_axes.reset(token)


def map_leading_axis(fn: Callable[[Any], Any], size: int, axis_name: str) -> Callable[[Any], Any]:
    """`vmap` over the leading axis, or a plain call on its only slice when it has size one.

    A vmap of size one is not free on CPU: its batched matmuls and gathers cost ~5% of training
    throughput at 128 envs, and most runs have one seed and no update batch.
    """
    if size > 1:
        return jax.vmap(fn, axis_name=axis_name)

    def only_slice(tree: Any) -> Any:
        return jax.tree.map(lambda x: x[None], fn(jax.tree.map(lambda x: x[0], tree)))

    return only_slice


class BuildContext(NamedTuple):
    config: DictConfig
    env: EpisodeEnv
    plan: RunPlan


class SystemParts(NamedTuple):
    """What a system hands the runner; every function acts on ONE replica (no leading axes).

    init_shared: params_key -> what all replicas of a seed share (parameters, optimiser
        states). It runs once per seed on one device, so every replica of a seed starts from
        identical parameters by construction.
    init_state: (shared, replica_key) -> learner state of one replica; replica_key seeds its
        envs and sampling.
    update_step: one update (rollout + learning) of one replica; average gradients with
        `pmean_replicas`.
    actor_params: the parameters the evaluator needs, taken from a learner state.
    eval_act: greedy flag -> act(params, batched observation, key) -> batched actions.
    """

    init_shared: Callable[[PRNGKey, Mapping[str, jax.Array]], Any]
    init_state: Callable[[Any, PRNGKey], LearnerState]
    update_step: Callable[[LearnerState], Tuple[LearnerState, TrainMetrics]]
    actor_params: Callable[[LearnerState], Params]
    eval_act: Callable[[bool], EvalActFn]


@dataclass(frozen=True)
class AnakinSystem:
    name: str
    action_kinds: Tuple[str, ...]
    build: Callable[[BuildContext], SystemParts]
    validate: Callable[[DictConfig, RunPlan], None] = lambda cfg, plan: None
    # Config keys whose values can differ between the runs of one program (`arch.sweep.key`):
    # the system must read them from the state its `init_shared` builds, not from the config.
    sweepable: Tuple[str, ...] = ()


class CheckpointPayload(NamedTuple):
    learner_state: LearnerState  # [D, S, B, ...]
    best_actor_params: Params  # [D, S, ...] best-so-far params per seed, for the absolute metric
    best_returns: np.ndarray  # [S]
    # [S] env steps at which each run diverged and was frozen; HEALTHY while it trains.
    diverged_at_step: np.ndarray


HEALTHY = -1


class TrainingDiverged(RuntimeError):
    """Training produced NaN or inf; the run stops before the bad state is checkpointed."""


def non_finite_metrics(summary: Mapping[str, float]) -> list[str]:
    # Episode statistics are NaN when no episode ended in a period; only losses must be finite.
    return [
        name
        for name, value in summary.items()
        if name not in ("episode_return", "episode_length") and not np.isfinite(value)
    ]


def check_finite(train: Sequence[dict[str, float]], runs: Sequence[str], step: int) -> None:
    for run, summary in zip(runs, train, strict=True):
        bad = non_finite_metrics(summary)
        if bad:
            raise TrainingDiverged(
                f"non-finite {', '.join(bad)} in {run} during the period ending at step "
                f"{step:,}; the last good checkpoint (if any) is kept"
            )


def _finite_per_run(metrics: TrainMetrics) -> jax.Array:
    """[S] whether every loss value of each run in one device's [S, B, U, ...] metrics is
    finite, agreed over the devices (each holds a share of every run's replicas)."""
    leaves = jax.tree.leaves(metrics.loss_info)
    finite = jnp.ones(metrics.num_episodes.shape[:1], bool)
    for leaf in leaves:
        finite &= jnp.all(jnp.isfinite(leaf.reshape(leaf.shape[0], -1)), axis=1)
    return jax.lax.pmin(finite.astype(jnp.int32), DEVICE_AXIS) > 0


def _keep_healthy(new: Any, old: Any, keep: jax.Array) -> Any:
    """Each run's new state where `keep` [S], its state from before the period elsewhere."""
    return jax.tree.map(
        lambda n, o: jnp.where(keep.reshape(keep.shape + (1,) * (n.ndim - 1)), n, o), new, old
    )


@dataclass(frozen=True)
class RunResult:
    """What a finished run measured; `run_anakin` returns only `final_return`."""

    final_return: float  # last evaluation's mean return over seeds
    absolute_return: float  # best params re-evaluated (nan when arch.absolute_metric is off)
    compile_seconds: float  # ahead-of-time compilation of learn and the evaluators
    learn_seconds: float  # wall time inside the compiled learn calls, excluding compilation
    env_steps: int  # env steps run in this process, summed over seeds
    compilations: int  # XLA compilations from state creation to the end
    compilations_after_startup: int  # during the evaluation periods: 0 when nothing recompiles
    run_dir: Path


def _seed_keys(seeds: Sequence[int], plan: RunPlan) -> Tuple[np.ndarray, np.ndarray]:
    """Params keys [S, 2], one per seed, and replica keys [D, S, B, 2], all distinct."""
    params_keys, replica_keys = [], []
    for seed in seeds:
        params_key, replicas_key = jax.random.split(jax.random.PRNGKey(seed))
        params_keys.append(np.asarray(params_key))
        replica_keys.append(
            np.asarray(
                jax.random.split(replicas_key, plan.num_devices * plan.update_batch_size)
            ).reshape(plan.num_devices, plan.update_batch_size, 2)
        )
    return np.stack(params_keys), np.stack(replica_keys, axis=1)


def _summarise_train(metrics: TrainMetrics, num_seeds: int) -> list[dict[str, float]]:
    """Reduces [D, S, B, U] metrics to one dict of scalars per seed."""
    host = to_host(metrics)
    summaries = []
    for s in range(num_seeds):
        count = float(np.sum(host.num_episodes[:, s]))
        summary = {
            "episode_return": float(np.sum(host.episode_return_sum[:, s]) / max(count, 1.0)),
            "episode_length": float(np.sum(host.episode_length_sum[:, s]) / max(count, 1.0)),
            "episodes": count,
        }
        if count == 0:
            summary["episode_return"] = float("nan")
            summary["episode_length"] = float("nan")
        loss_info = host.loss_info._asdict() if hasattr(host.loss_info, "_asdict") else {}
        for name, value in loss_info.items():
            summary[name] = float(np.mean(value[:, s]))
        summaries.append(summary)
    return summaries


def _mark_diverged(
    evaluation: Sequence[dict[str, np.ndarray]], diverged_at_step: np.ndarray
) -> None:
    """Files the step at which a frozen run diverged with each of its evaluations, so the
    marl-eval JSON says which runs stopped learning (as a one-value metric list, the only
    shape marl-eval's readers accept beside the episode lists)."""
    for per_run, step in zip(evaluation, diverged_at_step, strict=True):
        if step != HEALTHY:
            per_run["diverged_at_step"] = np.array([step], np.float64)


def _eval_to_host(out: EvalOutput, num_episodes: int) -> list[dict[str, np.ndarray]]:
    """[D, S, E/D] device-split episodes → per seed {metric: [E]}."""
    host = to_host(out)
    results = []
    for s in range(host.episode_return.shape[1]):
        results.append(
            {
                "episode_return": host.episode_return[:, s].reshape(-1)[:num_episodes],
                "episode_length": host.episode_length[:, s].reshape(-1)[:num_episodes],
            }
        )
    return results


def runs_root_of(cfg: DictConfig, system_name: str) -> Path:
    """The folder whose subfolders are the run directories of this system on this task."""
    return (
        Path(str(cfg.logger.base_exp_path)) / system_name / f"{cfg.env.suite}_{cfg.env.task_name}"
    )


def run_directory(cfg: DictConfig, system: Any, plain: dict) -> Tuple[Path, bool]:
    """Where this run writes, and whether it resumes; decided before anything is written."""
    from stoix.utils.checkpointing import find_resumable_run

    check_results_path(Path(str(cfg.logger.base_exp_path)))

    runs_root = runs_root_of(cfg, system.name)
    ckpt = cfg.logger.checkpointing
    if ckpt.load_model or ckpt.get("load_path"):
        if ckpt.get("load_path"):
            path = Path(str(ckpt.load_path))
            run_dir = path.parent if path.name == "checkpoints" else path
            if not (run_dir / "checkpoints").is_dir():
                raise ConfigError(f"logger.checkpointing.load_path={path} holds no checkpoints/")
            return run_dir, True
        found = find_resumable_run(runs_root, plain)
        if found is None:
            raise ConfigError(
                "logger.checkpointing.load_model=True but no checkpoint of this exact config "
                f"exists under {runs_root}"
            )
        return found, True
    from stoix.utils.checkpointing import config_fingerprint

    # Every process of a multi-host run must agree on the directory its checkpoints go to.
    stamp = broadcast_text(datetime.now().strftime("%Y%m%d-%H%M%S-%f"))
    return runs_root / f"{stamp}_{config_fingerprint(plain)[:8]}", False


def open_checkpoints(
    cfg: DictConfig,
    plain: dict,
    run_dir: Path,
    resume: bool,
    payload: CheckpointPayload,
    num_evaluation: int,
) -> Tuple[Any, CheckpointPayload, int]:
    """The run's checkpointer (None when it neither saves nor resumes), the payload to start
    from (restored when resuming) and the first period to run.

    Resuming reads the newest complete and intact checkpoint; the primary process prints which
    one, and why each newer one was skipped (those are set aside under `checkpoints/_rejected/`).
    """
    from stoix.utils.checkpointing import Checkpointer, CheckpointError, device_count

    ckpt_cfg = cfg.logger.checkpointing
    if not (resume or ckpt_cfg.save_model):
        return None, payload, 0
    checkpointer = Checkpointer(
        run_dir / "checkpoints",
        plain,
        keep_latest=int(ckpt_cfg.keep_latest),
        keep_best=int(ckpt_cfg.keep_best),
        # The learner state spans the run's devices (Anakin: sharded over all of them;
        # Sebulba: replicated over the learner's), and restores onto as many only.
        num_devices=device_count(payload.learner_state),
    )
    if not resume:
        return checkpointer, payload, 0
    try:
        restored = checkpointer.restore(payload)
    except CheckpointError as err:
        checkpointer.close()
        raise ConfigError(f"cannot resume from {run_dir}: {err}") from err
    period = restored.info.period
    if is_primary():
        for skipped in restored.skipped:
            print(
                f"Warning: skipped checkpoint {skipped.period}, which {skipped.reason}; "
                f"moved it to {skipped.moved_to}",
                file=sys.stderr,
            )
        print(
            f"Resuming {run_dir} after evaluation {period + 1}/{num_evaluation} "
            f"(from checkpoint {period})"
        )
    return checkpointer, restored.payload, period + 1


def resumed_checkpoint(checkpointer: Any, start_period: int) -> Path | None:
    """The checkpoint a run resumed from (the last good one until it saves again), if any."""
    if checkpointer is None or start_period == 0:
        return None
    return checkpointer.directory / str(start_period - 1)


def open_run_logger(
    cfg: DictConfig,
    plain: dict,
    run_dir: Path,
    resume: bool,
    identity: "RunIdentity",
    plan: RunPlan,
) -> "StoixLogger":
    """Creates the run directory (with the resolved config, unless resuming) and its logger;
    the first thing a run writes, once every check has passed and everything has compiled.
    In a multi-host run only process 0 writes: the others get a logger with no sinks."""
    from stoix.utils.logger import StoixLogger

    if not is_primary():
        return StoixLogger(
            run_dir,
            identity,
            num_periods=plan.num_evaluation,
            total_steps=plan.total_steps,
            use_console=False,
            use_json=False,
            use_tb=False,
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    if not resume:
        OmegaConf.save(cfg, run_dir / "config.yaml", resolve=True)
    return StoixLogger(
        run_dir,
        identity,
        num_periods=plan.num_evaluation,
        total_steps=plan.total_steps,
        use_console=bool(cfg.logger.use_console),
        use_json=bool(cfg.logger.use_json),
        use_tb=bool(cfg.logger.use_tb),
        colour=bool(cfg.logger.colour),
        resume=resume,
        config=plain,
        neptune=plain["logger"].get("neptune"),
        wandb=plain["logger"].get("wandb"),
    )


def run_anakin(cfg: DictConfig, system: AnakinSystem) -> float:
    """Runs one Anakin experiment; returns the last evaluation's mean return over seeds."""
    return run_anakin_measured(cfg, system).final_return


def run_anakin_measured(cfg: DictConfig, system: AnakinSystem) -> RunResult:
    """Runs one Anakin experiment and reports what it measured (see `RunResult`).

    Raises:
        RunStopped: SIGTERM, SIGUSR1 or SIGUSR2 arrived; the run stopped at the end of the
            period it was in, with that period logged and (if checkpointing is on) saved.
    """
    with stop_on_signals() as stop_request:
        return _run_anakin(cfg, system, stop_request)


def _run_anakin(cfg: DictConfig, system: AnakinSystem, stop_request: StopRequest) -> RunResult:
    from stoix.utils.logger import RunIdentity, check_tracker_settings

    OmegaConf.set_readonly(cfg, True)
    # CONFIG CHECKS: all of them happen before compiling or writing anything.
    validate_config(cfg)  # before `arch.distributed` is read
    initialise_distributed(cfg)  # before anything touches a device
    devices = jax.devices()  # every process's devices: the mesh spans all of them
    primary = is_primary()
    plan = make_run_plan(cfg, len(devices))
    system.validate(cfg, plan)
    env = make_env(cfg.env)
    eval_env = make_env(cfg.env)
    if env.spec.action_kind not in system.action_kinds:
        raise ConfigError(
            f"env={cfg.env.suite}/{cfg.env.task_name} has {env.spec.action_kind} actions but "
            f"{system.name} handles only {' or '.join(system.action_kinds)} actions"
        )
    if plan.sweep_key is not None and plan.sweep_key not in system.sweepable:
        can = ", ".join(system.sweepable) or "nothing"
        raise ConfigError(
            f"arch.sweep.key={plan.sweep_key} cannot be swept by {system.name} "
            f"(it can sweep: {can})"
        )
    plain = to_plain(cfg)
    check_tracker_settings(plain["logger"])
    run_dir, resume = run_directory(cfg, system, plain)
    seeds = plan.run_seeds(int(cfg.arch.seed))
    swept = plan.run_sweep_values()
    short_key = (plan.sweep_key or "").removeprefix("system.")
    run_labels = tuple(f"{short_key}={value:g}" for value in swept)
    identity = RunIdentity(
        system.name, str(cfg.env.suite), str(cfg.env.task_name), seeds, run_labels
    )

    # BUILD: the system's functions, then the parallel structure around them.
    parts = system.build(BuildContext(cfg, env, plan))
    mesh = Mesh(np.array(devices), (DEVICE_AXIS,))
    sharded = NamedSharding(mesh, P(DEVICE_AXIS))

    def on_each_device(
        fn: Callable[..., Any], num_args: int = 1, donate: bool = False
    ) -> Callable[..., Any]:
        """jit + shard_map of a function of per-device slices (leading axis kept, size 1).

        Every multi-device program goes through shard_map: left to the SPMD partitioner, even a
        slice of sharded state gets collectives, which can deadlock on multi-device CPU.
        check_vma is off because env constants (e.g. an all-True action mask) are
        device-invariant values inside device-varying carries, which the checker rejects.
        """
        return jax.jit(
            jax.shard_map(
                fn,
                mesh=mesh,
                in_specs=(P(DEVICE_AXIS),) * num_args,
                out_specs=P(DEVICE_AXIS),
                check_vma=False,
            ),
            donate_argnums=(0,) if donate else (),
        )

    def per_replica_period(state: LearnerState) -> Tuple[LearnerState, TrainMetrics]:
        return jax.lax.scan(
            lambda s, _: parts.update_step(s), state, None, length=plan.updates_per_evaluation
        )

    per_device = map_leading_axis(
        map_leading_axis(per_replica_period, plan.update_batch_size, BATCH_AXIS),
        plan.num_runs,
        SEED_AXIS,
    )
    replica_axes = (BATCH_AXIS, DEVICE_AXIS) if plan.update_batch_size > 1 else (DEVICE_AXIS,)

    def learn_body(
        state: LearnerState, training: jax.Array
    ) -> Tuple[LearnerState, TrainMetrics, jax.Array]:
        local = jax.tree.map(lambda x: x[0], state)
        new, metrics = per_device(local)
        finite = _finite_per_run(metrics)
        if plan.num_runs > 1:
            # One diverging run must not end the others: it keeps the state it had before this
            # period (frozen from now on) while the others train on.
            new = _keep_healthy(new, local, finite & training[0])
        return jax.tree.map(lambda x: x[None], (new, metrics, finite))

    learn = on_each_device(learn_body, num_args=2, donate=True)

    def init_body(shared: Any, replica_keys: jax.Array) -> LearnerState:
        # shared: [1, S, ...] → every update-batch slot of a seed starts from the same copy.
        per_seed = jax.vmap(parts.init_state, in_axes=(None, 0))
        local = jax.vmap(per_seed)(jax.tree.map(lambda x: x[0], shared), replica_keys[0])
        return jax.tree.map(lambda x: x[None], local)

    init = on_each_device(init_body, num_args=2)

    # Evaluate with the first update-batch slot's params: all slots of a seed hold the same ones.
    extract_actor = on_each_device(
        lambda state: jax.tree.map(lambda x: jnp.copy(x[:, :, 0]), parts.actor_params(state))
    )

    greedy = bool(cfg.arch.evaluation_greedy)
    max_eval_steps = int(cfg.arch.get("eval_max_steps") or eval_env.max_episode_steps + 1)

    def make_sharded_eval(episodes_per_device: int):
        evaluate = make_evaluator(
            eval_env, parts.eval_act(greedy), episodes_per_device, max_eval_steps
        )

        def body(params: Params, key: PRNGKey) -> EvalOutput:
            device_key = jax.random.fold_in(key, jax.lax.axis_index(DEVICE_AXIS))
            local = jax.tree.map(lambda x: x[0], params)
            keys = jax.random.split(device_key, plan.num_runs)
            return jax.tree.map(lambda x: x[None], jax.vmap(evaluate)(local, keys))

        return jax.jit(
            jax.shard_map(
                body,
                mesh=mesh,
                in_specs=(P(DEVICE_AXIS), P()),
                out_specs=P(DEVICE_AXIS),
                check_vma=False,
            )
        )

    evaluate = make_sharded_eval(plan.eval_episodes_per_device)

    def select_improved(best: Params, current: Params, improved: jax.Array) -> Params:
        return jax.tree.map(
            lambda b, c: jnp.where(improved.reshape(improved.shape + (1,) * (b.ndim - 2)), c, b),
            best,
            current,
        )

    keep_best = on_each_device(select_improved, num_args=3)

    # STATE: fresh, then replaced by the checkpoint when resuming.
    compile_counter = CompileCounter()
    params_keys, replica_keys = _seed_keys(seeds, plan)
    tuned = {plan.sweep_key: np.asarray(swept, np.float32)} if plan.sweep_key else {}
    shared = jax.device_get(jax.jit(jax.vmap(parts.init_shared))(params_keys, tuned))
    shared = jax.tree.map(lambda x: np.broadcast_to(x[None], (plan.num_devices,) + x.shape), shared)
    state = init(to_global(shared, sharded), to_global(replica_keys, sharded))
    payload = CheckpointPayload(
        learner_state=state,
        best_actor_params=extract_actor(state),
        best_returns=np.full((plan.num_runs,), -np.inf, np.float32),
        diverged_at_step=np.full((plan.num_runs,), HEALTHY, np.int64),
    )
    ckpt_cfg = cfg.logger.checkpointing
    checkpointer, payload, start_period = open_checkpoints(
        cfg, plain, run_dir, resume, payload, plan.num_evaluation
    )
    state = payload.learner_state
    best_params = payload.best_actor_params
    best_returns = np.asarray(payload.best_returns, np.float32).copy()
    diverged_at_step = np.asarray(payload.diverged_at_step, np.int64).copy()

    if primary:
        processes = f" in {jax.process_count()} processes" if jax.process_count() > 1 else ""
        print(f"Run plan: {plan.describe()}{processes}")
    if primary and plan.total_steps != plan.requested_steps:
        print(
            f"Warning: {plan.requested_steps:,} steps requested; {plan.total_steps:,} will run "
            f"so that every evaluation period holds {plan.updates_per_evaluation} whole updates.",
            file=sys.stderr,
        )

    # COMPILE once, ahead of time, so the periods below never compile again.
    compile_start = time.perf_counter()

    def training_mask() -> jax.Array:
        training = np.broadcast_to(diverged_at_step == HEALTHY, (plan.num_devices, plan.num_runs))
        return to_global(np.ascontiguousarray(training), sharded)

    with replicas_over(replica_axes):
        learn_compiled = learn.lower(state, training_mask()).compile()
    # One key per evaluation (and one for the absolute metric), made now so periods compile nothing.
    eval_keys = np.asarray(
        jax.random.split(
            jax.random.PRNGKey(int(cfg.arch.seed) + 1_000_003), plan.num_evaluation + 1
        )
    )
    eval_base_key = eval_keys[0]
    evaluate_compiled = evaluate.lower(best_params, eval_base_key).compile()
    improved_template = to_global(np.zeros((plan.num_devices, plan.num_runs), bool), sharded)
    keep_best_compiled = keep_best.lower(best_params, best_params, improved_template).compile()
    # The absolute metric reuses the evaluation program, once per multiple of its episodes, with
    # keys made now: a second evaluator of 10× the width would cost one more compilation per run.
    absolute_keys = np.asarray(
        jax.random.split(
            eval_keys[plan.num_evaluation], int(cfg.arch.absolute_metric_episode_multiplier)
        )
    )
    compile_seconds = time.perf_counter() - compile_start

    with writes_to(run_dir, None):
        logger = open_run_logger(cfg, plain, run_dir, resume, identity, plan)
    if primary:
        print(f"Writing to {run_dir} (compiled in {compile_seconds:.1f}s)")

    if primary:
        for run, step in zip(identity.run_names, diverged_at_step, strict=True):
            if step != HEALTHY:
                print(
                    f"Warning: {run} diverged at step {step:,} before the resume; it stays frozen.",
                    file=sys.stderr,
                )
    startup_compilations = compile_counter.count
    last_return = float("nan")
    absolute_return = float("nan")
    total_learn_seconds = 0.0
    env_steps = 0
    last_checkpoint = resumed_checkpoint(checkpointer, start_period)
    try:
        for period in range(start_period, plan.num_evaluation):
            # A signal (during compilation, or the period before) ends the run here, between
            # periods; every process stops at the same one, or the others would wait forever.
            if any_process(stop_request.requested):
                raise RunStopped(
                    tuple(stop_request.received),
                    period * plan.steps_per_evaluation,
                    last_checkpoint,
                )
            # LEARN for one evaluation period.
            start = time.perf_counter()
            state, metrics, finite = learn_compiled(state, training_mask())
            jax.block_until_ready(state)
            learn_seconds = time.perf_counter() - start
            total_learn_seconds += learn_seconds
            env_steps += plan.num_runs * plan.steps_per_evaluation
            train = _summarise_train(metrics, plan.num_runs)
            steps_done = (period + 1) * plan.steps_per_evaluation
            newly_diverged = (diverged_at_step == HEALTHY) & ~to_host(finite)[0]
            if np.all(newly_diverged | (diverged_at_step != HEALTHY)):
                check_finite(train, identity.run_names, steps_done)
                raise TrainingDiverged(f"every run has diverged by step {steps_done:,}")
            for run in np.flatnonzero(newly_diverged):
                diverged_at_step[run] = steps_done
                if primary:
                    print(
                        f"Warning: {identity.run_names[run]} diverged (non-finite "
                        f"{', '.join(non_finite_metrics(train[run]))}) in the period ending at "
                        f"step {steps_done:,}; its state stays as it was at step "
                        f"{steps_done - plan.steps_per_evaluation:,} and the other runs continue.",
                        file=sys.stderr,
                    )
            for run in np.flatnonzero(diverged_at_step != HEALTHY):
                # A frozen run re-runs its last good period each time; that is not training.
                train[run] = dict.fromkeys(train[run], float("nan"))

            # EVALUATE the current params; remember each seed's best for the absolute metric.
            start = time.perf_counter()
            actor_params = extract_actor(state)
            evaluation = _eval_to_host(
                evaluate_compiled(actor_params, eval_keys[period]),
                plan.num_eval_episodes,
            )
            eval_seconds = time.perf_counter() - start
            mean_returns = np.array([e["episode_return"].mean() for e in evaluation], np.float32)
            _mark_diverged(evaluation, diverged_at_step)
            improved = mean_returns > best_returns
            improved_per_device = np.broadcast_to(improved, (plan.num_devices, plan.num_runs))
            best_params = keep_best_compiled(
                best_params, actor_params, to_global(improved_per_device, sharded)
            )
            best_returns = np.where(improved, mean_returns, best_returns)
            last_return = float(mean_returns.mean())

            # LOG and CHECKPOINT.
            with writes_to(run_dir, last_checkpoint):
                logger.log_period(
                    period,
                    steps_done,
                    train,
                    evaluation,
                    {
                        "steps_per_second": plan.num_runs
                        * plan.steps_per_evaluation
                        / learn_seconds,
                        "period_seconds": learn_seconds,
                        "eval_seconds": eval_seconds,
                        "compile_seconds": compile_seconds,
                    },
                )
                if ckpt_cfg.save_model and checkpointer is not None:
                    checkpointer.save(
                        period,
                        CheckpointPayload(state, best_params, best_returns, diverged_at_step),
                        metric=last_return,
                        steps_done=steps_done,
                    )
                    last_checkpoint = checkpointer.directory / str(period)

        if bool(cfg.arch.absolute_metric):
            chunks = [
                _eval_to_host(evaluate_compiled(best_params, key), plan.num_eval_episodes)
                for key in absolute_keys
            ]
            absolute = [
                {name: np.concatenate([c[s][name] for c in chunks]) for name in chunks[0][s]}
                for s in range(plan.num_runs)
            ]
            _mark_diverged(absolute, diverged_at_step)
            with writes_to(run_dir, last_checkpoint):
                logger.log_absolute(absolute)
            absolute_return = float(np.mean([a["episode_return"].mean() for a in absolute]))
    finally:
        with writes_to(run_dir, last_checkpoint):
            logger.close()
            if checkpointer is not None:
                checkpointer.close()
    if primary and bool(cfg.arch.get("report_compiles", False)):
        print(f"XLA compilations: {compile_counter.count}")
    return RunResult(
        final_return=last_return,
        absolute_return=absolute_return,
        compile_seconds=compile_seconds,
        learn_seconds=total_learn_seconds,
        env_steps=env_steps,
        compilations=compile_counter.count,
        compilations_after_startup=compile_counter.count - startup_compilations,
        run_dir=run_dir,
    )
