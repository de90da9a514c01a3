"""The Sebulba runner: actor threads on actor devices, one learner on learner devices.

Sebulba trains on environments that are not written in JAX. Its parts are explicit objects
(the layout in `sebulba_layout.py`, the thread objects in `sebulba_threads.py`):

* `SebulbaLayout` — which devices act, learn and evaluate (`arch.actor`, `arch.learner`,
  `arch.evaluator_device_id`);
* `Lifetime` — owns every thread: a failure in any of them stops the run and is re-raised in
  the main thread with that thread's traceback; every queue operation has a timeout, so no
  thread can wait forever on a partner that died;
* `ParamSource` — the learner publishes each update's actor parameters to every actor device;
  actors pick up the newest at the start of each rollout;
* the rollout pipeline — one bounded queue per actor thread (`arch.pipeline_capacity`); the
  learner takes one rollout from every actor per update, so an actor is at most
  `pipeline_capacity + 1` updates behind the learner (the policy lag, logged);
* `StageClock` — seconds spent per stage (env step, inference, queue waits, learner step,
  parameter transfer), logged each period so the bottleneck is visible.

The learner runs in the main thread: one compiled update per step, `shard_map`-ed over the
learner devices with the batch split along its env axis (gradients averaged with
`pmean_replicas`). Evaluation runs in the main thread between periods on its own env pool.
Logging, checkpointing, run directories and config checks are the run session's
(`session.py`), shared with the Anakin runner.
"""

import queue
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from omegaconf import DictConfig, OmegaConf

from stoix.base_types import Observation, Params, PRNGKey
from stoix.errors import ConfigError
from stoix.evaluator.sebulba import EvalStepFn, evaluate_on_host
from stoix.parallel import DEVICE_AXIS, replicas_over
from stoix.runners.sebulba_layout import describe_plan, make_sebulba_plan, resolve_layout
from stoix.runners.sebulba_threads import (
    ActorOutput,
    EpisodeTally,
    Lifetime,
    ParamSource,
    StageClock,
    Stopped,
    Stopwatch,
    actor_loop,
    copy_to,
    host_observation,
)
from stoix.runners.session import (
    HEALTHY,
    CheckpointPayload,
    RunSession,
    announce_plan,
    check_finite,
    open_checkpoints,
    period_timing,
    run_directory,
)
from stoix.runners.settings import PipelineSettings, RunSettings
from stoix.system_api import (
    Rollout,
    SebulbaBuildContext,
    SebulbaLayout,
    SebulbaParts,
    SebulbaSystem,
)
from stoix.utils.config import RunPlan, to_plain
from stoix.utils.stopping import StopRequest, stop_on_signals
from stoix.utils.timing import CompileCounter
from stoix.wrappers.host import HostVectorEnv
from stoix.wrappers.host_factory import make_host_env


@dataclass(frozen=True)
class SebulbaResult:
    final_return: float
    absolute_return: float
    env_steps: int  # env steps run in this process
    learn_seconds: float  # wall time of the learning periods (evaluation excluded)
    compile_seconds: float
    compilations_after_startup: int
    run_dir: Path
    # Seconds per pipeline stage over the whole run, per thread (see `_summarise`).
    stage_seconds: Dict[str, float]

    @property
    def steps_per_second(self) -> float:
        return self.env_steps / max(self.learn_seconds, 1e-9)


def _evaluation_env(cfg: DictConfig, num_envs: int) -> HostVectorEnv:
    return make_host_env(cfg.env, num_envs, int(cfg.arch.seed) + 1_000_003)


def _stack_rollouts(outputs: Sequence[ActorOutput]) -> Rollout:
    """Concatenates the actors' rollouts along the env axis (axis 1)."""
    return jax.tree.map(lambda *xs: np.concatenate(xs, axis=1), *[o.rollout for o in outputs])


def run_sebulba(cfg: DictConfig, system: SebulbaSystem) -> float:
    """Runs one Sebulba experiment; returns the last evaluation's mean return."""
    return run_sebulba_measured(cfg, system).final_return


def run_sebulba_measured(cfg: DictConfig, system: SebulbaSystem) -> SebulbaResult:
    """Runs one Sebulba experiment and reports what it measured (see `SebulbaResult`)."""
    OmegaConf.set_readonly(cfg, True)
    # CONFIG CHECKS before any thread, compilation or file.
    settings = RunSettings.from_config(cfg)
    layout = resolve_layout(cfg, jax.devices())
    plan = make_sebulba_plan(cfg, layout)
    pipeline = PipelineSettings.from_config(cfg)
    system.validate(cfg, plan, layout)
    eval_env = _evaluation_env(cfg, plan.num_eval_episodes)
    actor_envs: List[HostVectorEnv] = []
    lifetime = Lifetime(pipeline.thread_timeout_s)
    try:
        if eval_env.spec.action_kind not in system.action_kinds:
            raise ConfigError(
                f"env={cfg.env.suite}/{cfg.env.task_name} has {eval_env.spec.action_kind} "
                f"actions but {system.name} handles only {' or '.join(system.action_kinds)}"
            )
        for actor in range(layout.num_actors):
            actor_envs.append(
                make_host_env(cfg.env, plan.envs_per_replica, settings.seed + 7919 * actor)
            )
        with stop_on_signals() as stop_request:
            return _run(
                cfg,
                system,
                settings,
                layout,
                plan,
                pipeline,
                eval_env,
                actor_envs,
                lifetime,
                stop_request,
            )
    finally:
        lingering = lifetime.shutdown()
        if lingering:
            print(f"Warning: threads still running at exit: {', '.join(lingering)}")
        # Actor threads close their own envs; these never reached a thread.
        if not lifetime.started:
            for env in actor_envs:
                env.close()
        eval_env.close()


def _run(
    cfg: DictConfig,
    system: SebulbaSystem,
    settings: RunSettings,
    layout: SebulbaLayout,
    plan: RunPlan,
    pipeline: PipelineSettings,
    eval_env: HostVectorEnv,
    actor_envs: Sequence[HostVectorEnv],
    lifetime: Lifetime,
    stop_request: StopRequest,
) -> SebulbaResult:
    from stoix.logger import RunIdentity, check_tracker_settings

    plain = to_plain(cfg)
    check_tracker_settings(plain["logger"])
    run_dir, resume = run_directory(cfg, settings, system.name, plain)
    seed = settings.seed
    guard = pipeline.transfer_guard
    identity = RunIdentity(system.name, str(cfg.env.suite), str(cfg.env.task_name), (seed,), ())
    first = eval_env.reset()
    example = jax.tree.map(lambda x: np.asarray(x[:1]), host_observation(first))
    parts = system.build(SebulbaBuildContext(cfg, eval_env.spec, plan, example))

    # BUILD the learner over its devices and the acting and evaluation functions.
    mesh = Mesh(np.array(layout.learner_devices), (DEVICE_AXIS,))
    replicated = NamedSharding(mesh, P())
    split_envs = NamedSharding(mesh, P(None, DEVICE_AXIS))
    learn = jax.jit(
        jax.shard_map(
            parts.learn,
            mesh=mesh,
            in_specs=(P(), P(None, DEVICE_AXIS)),
            out_specs=(P(), P()),
            check_vma=False,
        ),
        donate_argnums=(0,),
    )
    params_key, actors_key = jax.random.split(jax.random.PRNGKey(seed))
    state = jax.device_put(jax.jit(parts.init_learner)(params_key), replicated)
    best_params = copy_to(parts.actor_params(state), layout.evaluator_device)
    payload = CheckpointPayload(
        state, best_params, np.full((1,), -np.inf, np.float32), np.full((1,), HEALTHY, np.int64)
    )
    checkpointer, payload, start_period = open_checkpoints(
        settings, plain, run_dir, resume, payload, plan.num_evaluation
    )
    state = jax.device_put(payload.learner_state, replicated)
    best_params = copy_to(payload.best_actor_params, layout.evaluator_device)
    best_return = float(np.asarray(payload.best_returns)[0])
    announce_plan(describe_plan(plan, layout), plan)

    # Keys are made before counting compilations: their tiny programs are not the run's.
    actor_keys = np.asarray(
        jax.random.split(jax.random.fold_in(actors_key, start_period), layout.num_actors)
    )
    eval_key = jax.device_put(jax.random.PRNGKey(seed + 1_000_003), layout.evaluator_device)
    example_key = np.asarray(jax.random.PRNGKey(0))

    # COMPILE every program ahead of the threads, so no thread compiles (or times out doing so).
    compile_counter = CompileCounter()
    compile_start = time.perf_counter()
    example_outputs = [_example_rollout(parts, plan, example, layout)] * layout.num_actors
    batch_template = jax.device_put(_stack_rollouts(example_outputs), split_envs)
    with replicas_over((DEVICE_AXIS,)):
        learn_compiled = learn.lower(state, batch_template).compile()
    del batch_template
    act_compiled = {
        device: jax.jit(parts.act)
        .lower(
            jax.device_put(parts.actor_params(state), device),
            jax.device_put(_tile(example, plan.envs_per_replica), device),
            jax.device_put(example_key, device),
        )
        .compile()
        for device in layout.actor_devices
    }
    eval_step = _make_eval_step(parts, settings.evaluation_greedy)
    eval_compiled: EvalStepFn = eval_step.lower(
        best_params,
        jax.device_put(_tile(example, plan.num_eval_episodes), layout.evaluator_device),
        jax.device_put(example_key, layout.evaluator_device),
    ).compile()
    compile_seconds = time.perf_counter() - compile_start
    startup_compilations = compile_counter.count

    session = RunSession(run_dir, checkpointer, start_period, settings)
    session.open_logger(cfg, plain, resume, identity, plan, compile_seconds)

    # START the actors once the first parameters are published.
    clock = StageClock()
    source = ParamSource(layout.actor_devices)
    version = start_period * plan.updates_per_evaluation
    source.publish(parts.actor_params(state), version)
    channels: List[queue.Queue[ActorOutput]] = []
    for actor, env in enumerate(actor_envs):
        channel: queue.Queue[ActorOutput] = queue.Queue(pipeline.pipeline_capacity)
        channels.append(channel)
        device = layout.actor_device(actor)
        loop_args = (
            env,
            act_compiled[device],
            device,
            actor_keys[actor],
            source,
            channel,
            lifetime,
            clock,
            plan.rollout_length,
            guard,
        )
        lifetime.spawn(f"actor-{actor}", lambda args=loop_args: actor_loop(*args))

    eval_max_steps = settings.eval_step_cap(eval_env.spec.max_episode_steps)
    final_return = absolute_return = float("nan")
    learn_seconds = 0.0
    env_steps = 0
    stage_totals: Dict[str, float] = {}
    try:
        for period in range(start_period, plan.num_evaluation):
            session.stop_if_requested(
                stop_request.requested, stop_request, period * plan.steps_per_evaluation
            )
            # LEARN: one rollout from every actor per update.
            period_start = time.perf_counter()
            infos, lags = [], []
            episodes = EpisodeTally(0, 0.0, 0)
            with jax.transfer_guard(guard):
                for _ in range(plan.updates_per_evaluation):
                    with Stopwatch(clock, "learner_queue_wait"):
                        outputs = [
                            lifetime.get(channel, f"a rollout from actor-{i}")
                            for i, channel in enumerate(channels)
                        ]
                    with Stopwatch(clock, "learner_step"):
                        batch = jax.device_put(_stack_rollouts(outputs), split_envs)
                        state, info = learn_compiled(state, batch)
                        jax.block_until_ready(state)
                    version += 1
                    with Stopwatch(clock, "learner_param_publish"):
                        source.publish(parts.actor_params(state), version)
                    infos.append(info)
                    lags.extend(version - 1 - o.params_version for o in outputs)
                    for o in outputs:
                        episodes = episodes + o.episodes
            period_seconds = time.perf_counter() - period_start
            learn_seconds += period_seconds
            env_steps += plan.steps_per_evaluation
            steps_done = (period + 1) * plan.steps_per_evaluation
            stages = clock.take()
            for stage, seconds in stages.items():
                stage_totals[stage] = stage_totals.get(stage, 0.0) + seconds
            train = _summarise(jax.device_get(infos), episodes, lags, stages, layout)
            check_finite([train], identity.run_names, steps_done)

            # EVALUATE on the evaluator's own env pool; keep the best parameters.
            eval_start = time.perf_counter()
            actor_params = copy_to(parts.actor_params(state), layout.evaluator_device)
            evaluation, eval_key = evaluate_on_host(
                eval_env, eval_compiled, actor_params, eval_key, eval_max_steps
            )
            eval_seconds = time.perf_counter() - eval_start
            final_return = float(evaluation["episode_return"].mean())
            if final_return > best_return:
                best_return, best_params = final_return, actor_params

            session.end_period(
                period,
                steps_done,
                [train],
                [evaluation],
                period_timing(
                    plan.steps_per_evaluation, period_seconds, eval_seconds, compile_seconds
                ),
                CheckpointPayload(
                    state,
                    best_params,
                    np.asarray([best_return], np.float32),
                    np.full((1,), HEALTHY, np.int64),
                ),
                metric=final_return,
            )
        # The actors are not needed for the absolute metric.
        lifetime.shutdown()
        lifetime.check()
        if settings.absolute_metric:
            chunks = []
            for _ in range(settings.absolute_metric_episode_multiplier):
                chunk, eval_key = evaluate_on_host(
                    eval_env, eval_compiled, best_params, eval_key, eval_max_steps
                )
                chunks.append(chunk)
            absolute = {name: np.concatenate([c[name] for c in chunks]) for name in chunks[0]}
            session.log_absolute([absolute])
            absolute_return = float(absolute["episode_return"].mean())
    except Stopped:
        lifetime.check()
        raise
    finally:
        session.close()
    session.report_compilations(compile_counter.count)
    return SebulbaResult(
        final_return=final_return,
        absolute_return=absolute_return,
        env_steps=env_steps,
        learn_seconds=learn_seconds,
        compile_seconds=compile_seconds,
        compilations_after_startup=compile_counter.count - startup_compilations,
        run_dir=run_dir,
        stage_seconds={
            stage: seconds / (layout.num_actors if stage.startswith("actor_") else 1)
            for stage, seconds in stage_totals.items()
        },
    )


def _tile(observation: Observation, num_envs: int) -> Observation:
    return jax.tree.map(lambda x: np.repeat(x, num_envs, axis=0), observation)


def _example_rollout(
    parts: SebulbaParts, plan: RunPlan, example: Observation, layout: SebulbaLayout
) -> ActorOutput:
    """A rollout of the right shapes and dtypes, to compile the learner before any actor runs."""
    n, t = plan.envs_per_replica, plan.rollout_length
    observation = _tile(example, n)
    params_shapes = jax.eval_shape(
        lambda key: parts.actor_params(parts.init_learner(key)),
        jax.ShapeDtypeStruct((2,), jnp.uint32),
    )
    key_shape = jax.ShapeDtypeStruct((2,), jnp.uint32)
    _, extras_shape, _ = jax.eval_shape(parts.act, params_shapes, observation, key_shape)
    del layout
    zeros = lambda s: np.zeros((t,) + s.shape, s.dtype)  # noqa: E731
    rollout = Rollout(
        observation=jax.tree.map(lambda x: np.repeat(x[None], t + 1, axis=0), observation),
        extras=jax.tree.map(zeros, extras_shape),
        reward=np.zeros((t, n), np.float32),
        terminated=np.zeros((t, n), bool),
        truncated=np.zeros((t, n), bool),
        valid=np.ones((t, n), bool),
    )
    return ActorOutput(rollout, 0, EpisodeTally(0, 0.0, 0))


def _make_eval_step(parts: SebulbaParts, greedy: bool) -> Any:
    act = parts.eval_act(greedy)

    def step(params: Params, observation: Observation, key: PRNGKey) -> Tuple[jax.Array, PRNGKey]:
        key, act_key = jax.random.split(key)
        return act(params, observation, act_key), key

    return jax.jit(step)


def _summarise(
    infos: Sequence[Any],
    episodes: EpisodeTally,
    lags: Sequence[int],
    stage_seconds: Dict[str, float],
    layout: SebulbaLayout,
) -> Dict[str, float]:
    """One period's training metrics: episodes, losses, policy lag and seconds per stage.

    Actor stages are summed over the actor threads and divided by their number, so every stage
    reads as seconds of one thread's period, comparable with the period's wall time.
    """
    count = max(episodes.count, 1)
    summary: Dict[str, float] = {
        "episode_return": episodes.return_sum / count if episodes.count else float("nan"),
        "episode_length": episodes.length_sum / count if episodes.count else float("nan"),
        "episodes": float(episodes.count),
        "policy_lag": float(np.mean(lags)) if lags else 0.0,
    }
    if infos and hasattr(infos[0], "_asdict"):
        for name in infos[0]._asdict():
            summary[name] = float(np.mean([getattr(i, name) for i in infos]))
    for stage, seconds in sorted(stage_seconds.items()):
        threads = layout.num_actors if stage.startswith("actor_") else 1
        summary[f"time_{stage}"] = seconds / threads
    return summary
