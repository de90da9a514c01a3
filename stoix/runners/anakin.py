"""The one Anakin experiment loop: set-up → learn → evaluate → log → checkpoint.

A system supplies only what is particular to it (`AnakinSystem.build` returns its `SystemParts`);
everything here is shared. The compiled programs and their parallel axes are built in
`anakin_program.py`; what a run writes and resumes is the session's (`session.py`). Python sees
the state once per evaluation period; everything within a period is one compiled program.
"""

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence, Tuple

import jax
import numpy as np
from omegaconf import DictConfig, OmegaConf

from stoix.base_types import TrainMetrics
from stoix.errors import ConfigError, TrainingDiverged
from stoix.evaluator.anakin import EvalOutput
from stoix.launch.multihost import initialise_distributed
from stoix.parallel import replicas_over
from stoix.runners.anakin_program import build_program
from stoix.runners.session import (
    HEALTHY,
    CheckpointPayload,
    RunSession,
    announce_plan,
    check_finite,
    non_finite_metrics,
    open_checkpoints,
    period_timing,
    run_directory,
)
from stoix.runners.settings import RunSettings
from stoix.system_api import AnakinSystem, BuildContext
from stoix.utils.config import RunPlan, make_run_plan, to_plain
from stoix.utils.distributed import any_process, is_primary, to_global, to_host
from stoix.utils.schema import validate_config
from stoix.utils.stopping import StopRequest, stop_on_signals
from stoix.utils.timing import CompileCounter
from stoix.wrappers.env_factory import make_env


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
    from stoix.logger import RunIdentity, check_tracker_settings

    OmegaConf.set_readonly(cfg, True)
    # CONFIG CHECKS: all of them happen before compiling or writing anything.
    validate_config(cfg)  # before `arch.distributed` is read
    settings = RunSettings.from_config(cfg)
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
    run_dir, resume = run_directory(cfg, settings, system.name, plain)
    seeds = plan.run_seeds(settings.seed)
    swept = plan.run_sweep_values()
    short_key = (plan.sweep_key or "").removeprefix("system.")
    run_labels = tuple(f"{short_key}={value:g}" for value in swept)
    identity = RunIdentity(
        system.name, str(cfg.env.suite), str(cfg.env.task_name), seeds, run_labels
    )

    # BUILD: the system's functions, then the parallel structure around them.
    parts = system.build(BuildContext(cfg, env, plan))
    program = build_program(
        parts,
        plan,
        devices,
        eval_env,
        settings.evaluation_greedy,
        settings.eval_step_cap(eval_env.max_episode_steps),
    )
    sharded = program.sharded

    # STATE: fresh, then replaced by the checkpoint when resuming.
    compile_counter = CompileCounter()
    params_keys, replica_keys = _seed_keys(seeds, plan)
    tuned = {plan.sweep_key: np.asarray(swept, np.float32)} if plan.sweep_key else {}
    shared = jax.device_get(jax.jit(jax.vmap(parts.init_shared))(params_keys, tuned))
    shared = jax.tree.map(lambda x: np.broadcast_to(x[None], (plan.num_devices,) + x.shape), shared)
    state = program.init(to_global(shared, sharded), to_global(replica_keys, sharded))
    payload = CheckpointPayload(
        learner_state=state,
        best_actor_params=program.extract_actor(state),
        best_returns=np.full((plan.num_runs,), -np.inf, np.float32),
        diverged_at_step=np.full((plan.num_runs,), HEALTHY, np.int64),
    )
    checkpointer, payload, start_period = open_checkpoints(
        settings, plain, run_dir, resume, payload, plan.num_evaluation
    )
    state = payload.learner_state
    best_params = payload.best_actor_params
    best_returns = np.asarray(payload.best_returns, np.float32).copy()
    diverged_at_step = np.asarray(payload.diverged_at_step, np.int64).copy()

    processes = f" in {jax.process_count()} processes" if jax.process_count() > 1 else ""
    announce_plan(f"{plan.describe()}{processes}", plan)

    # COMPILE once, ahead of time, so the periods below never compile again.
    compile_start = time.perf_counter()

    def training_mask() -> jax.Array:
        training = np.broadcast_to(diverged_at_step == HEALTHY, (plan.num_devices, plan.num_runs))
        return to_global(np.ascontiguousarray(training), sharded)

    with replicas_over(program.replica_axes):
        learn_compiled = program.learn.lower(state, training_mask()).compile()
    # One key per evaluation (and one for the absolute metric), made now so periods compile nothing.
    eval_keys = np.asarray(
        jax.random.split(jax.random.PRNGKey(settings.seed + 1_000_003), plan.num_evaluation + 1)
    )
    evaluate_compiled = program.evaluate.lower(best_params, eval_keys[0]).compile()
    improved_template = to_global(np.zeros((plan.num_devices, plan.num_runs), bool), sharded)
    keep_best_compiled = program.keep_best.lower(
        best_params, best_params, improved_template
    ).compile()
    # The absolute metric reuses the evaluation program, once per multiple of its episodes, with
    # keys made now: a second evaluator of 10× the width would cost one more compilation per run.
    absolute_keys = np.asarray(
        jax.random.split(
            eval_keys[plan.num_evaluation], settings.absolute_metric_episode_multiplier
        )
    )
    compile_seconds = time.perf_counter() - compile_start

    session = RunSession(run_dir, checkpointer, start_period, settings)
    session.open_logger(cfg, plain, resume, identity, plan, compile_seconds)

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
    try:
        for period in range(start_period, plan.num_evaluation):
            session.stop_if_requested(
                any_process(stop_request.requested),
                stop_request,
                period * plan.steps_per_evaluation,
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
            actor_params = program.extract_actor(state)
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
            session.end_period(
                period,
                steps_done,
                train,
                evaluation,
                period_timing(
                    plan.num_runs * plan.steps_per_evaluation,
                    learn_seconds,
                    eval_seconds,
                    compile_seconds,
                ),
                CheckpointPayload(state, best_params, best_returns, diverged_at_step),
                metric=last_return,
            )

        if settings.absolute_metric:
            chunks = [
                _eval_to_host(evaluate_compiled(best_params, key), plan.num_eval_episodes)
                for key in absolute_keys
            ]
            absolute = [
                {name: np.concatenate([c[s][name] for c in chunks]) for name in chunks[0][s]}
                for s in range(plan.num_runs)
            ]
            _mark_diverged(absolute, diverged_at_step)
            session.log_absolute(absolute)
            absolute_return = float(np.mean([a["episode_return"].mean() for a in absolute]))
    finally:
        session.close()
    session.report_compilations(compile_counter.count)
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
