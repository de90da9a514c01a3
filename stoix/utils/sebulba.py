"""The Sebulba runner: actor threads on actor devices, one learner on learner devices.

Sebulba trains on environments that are not written in JAX. Its parts are explicit objects:

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
Logging, checkpointing, run directories and config checks are the Anakin runner's.
"""

import queue
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, NamedTuple, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from omegaconf import DictConfig, OmegaConf

from stoix.base_types import EnvSpec, Observation, Params, PRNGKey
from stoix.evaluator.sebulba import EvalStepFn, evaluate_on_host
from stoix.utils.config import ConfigError, RunPlan, make_run_plan, to_plain
from stoix.utils.results_path import writes_to
from stoix.utils.runner import (
    DEVICE_AXIS,
    HEALTHY,
    CheckpointPayload,
    check_finite,
    open_checkpoints,
    open_run_logger,
    replicas_over,
    resumed_checkpoint,
    run_directory,
)
from stoix.utils.stopping import RunStopped, StopRequest, stop_on_signals
from stoix.utils.timing import CompileCounter
from stoix.wrappers.host import HostStep, HostVectorEnv
from stoix.wrappers.host_factory import make_host_env

# LAYOUT AND PLAN


@dataclass(frozen=True)
class SebulbaLayout:
    actor_devices: Tuple[jax.Device, ...]
    actors_per_device: int
    learner_devices: Tuple[jax.Device, ...]
    evaluator_device: jax.Device

    @property
    def num_actors(self) -> int:
        return len(self.actor_devices) * self.actors_per_device

    def actor_device(self, actor: int) -> jax.Device:
        return self.actor_devices[actor // self.actors_per_device]

    def describe(self) -> str:
        ids = lambda devices: ",".join(str(d.id) for d in devices)  # noqa: E731
        return (
            f"{self.num_actors} actor thread(s) on device(s) {ids(self.actor_devices)}, "
            f"learner on device(s) {ids(self.learner_devices)}, evaluator on device "
            f"{self.evaluator_device.id}"
        )


def _device_ids(cfg: DictConfig, key: str, devices: Sequence[jax.Device]) -> List[int] | None:
    ids = OmegaConf.select(cfg, key, default=None)
    if ids is None:
        return None
    if isinstance(ids, int):
        ids = [ids]
    try:
        as_ints = [int(i) for i in ids]
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{key}={ids!r} must be a list of device ids") from err
    if not as_ints:
        raise ConfigError(f"{key} must name at least one device")
    if len(set(as_ints)) != len(as_ints):
        raise ConfigError(f"{key}={as_ints} names a device twice")
    for i in as_ints:
        if not 0 <= i < len(devices):
            raise ConfigError(
                f"{key} names device {i} but this machine has {len(devices)} device(s) "
                f"(ids 0–{len(devices) - 1})"
            )
    return as_ints


def resolve_layout(cfg: DictConfig, devices: Sequence[jax.Device]) -> SebulbaLayout:
    """The devices of each role. Unset ids: actors on the first device, the learner on all the
    others (on a one-device machine both share it), evaluation on the first actor device."""
    actor_ids = _device_ids(cfg, "arch.actor.device_ids", devices)
    learner_ids = _device_ids(cfg, "arch.learner.device_ids", devices)
    if actor_ids is None:
        actor_ids = [0]
    if learner_ids is None:
        learner_ids = [i for i in range(len(devices)) if i not in actor_ids] or [0]
    evaluator_id = OmegaConf.select(cfg, "arch.evaluator_device_id", default=None)
    if evaluator_id is None:
        evaluator_id = actor_ids[0]
    if not 0 <= int(evaluator_id) < len(devices):
        raise ConfigError(
            f"arch.evaluator_device_id={evaluator_id} is not a device of this machine "
            f"({len(devices)} device(s))"
        )
    per_device = OmegaConf.select(cfg, "arch.actor.actor_per_device", default=None)
    if per_device is None or int(per_device) < 1:
        raise ConfigError(f"arch.actor.actor_per_device={per_device!r} must be at least 1")
    return SebulbaLayout(
        actor_devices=tuple(devices[i] for i in actor_ids),
        actors_per_device=int(per_device),
        learner_devices=tuple(devices[i] for i in learner_ids),
        evaluator_device=devices[int(evaluator_id)],
    )


def make_sebulba_plan(cfg: DictConfig, layout: SebulbaLayout) -> RunPlan:
    """The timestep checker's Sebulba branch: `arch.total_num_envs` is split over the actor
    threads; one update consumes one rollout of every actor, i.e. total envs × rollout steps."""
    for key in ("arch.num_seeds", "arch.update_batch_size"):
        if OmegaConf.select(cfg, key, default=1) != 1:
            raise ConfigError(
                f"{key} must be 1 with arch=sebulba (one run per process; launch seeds as "
                "separate runs)"
            )
    if OmegaConf.select(cfg, "system.normalise_observations", default=False):
        raise ConfigError(
            "system.normalise_observations=True is not supported with arch=sebulba yet"
        )
    if OmegaConf.select(cfg, "arch.sweep.key", default=None) is not None:
        raise ConfigError("arch.sweep is an Anakin feature; with arch=sebulba use a Hydra sweep")
    # Actor threads take the role of Anakin's devices: the envs must split evenly over them.
    plan = make_run_plan(cfg, layout.num_actors)
    if plan.total_num_envs % len(layout.learner_devices):
        raise ConfigError(
            f"arch.total_num_envs={plan.total_num_envs} is not divisible by the "
            f"{len(layout.learner_devices)} learner device(s) (arch.learner.device_ids)"
        )
    capacity = OmegaConf.select(cfg, "arch.pipeline_capacity", default=None)
    if capacity is None or int(capacity) < 1:
        raise ConfigError(f"arch.pipeline_capacity={capacity!r} must be at least 1")
    timeout = OmegaConf.select(cfg, "arch.thread_timeout_s", default=None)
    if timeout is None or float(timeout) <= 0:
        raise ConfigError(f"arch.thread_timeout_s={timeout!r} must be positive")
    return plan


def describe_plan(plan: RunPlan, layout: SebulbaLayout) -> str:
    return (
        f"{plan.total_steps:,} env steps = {plan.num_evaluation} evaluations × "
        f"{plan.updates_per_evaluation} updates × {plan.steps_per_update:,} steps "
        f"({plan.total_num_envs} envs = {layout.num_actors} actor thread(s) × "
        f"{plan.envs_per_replica}, × {plan.rollout_length} rollout); {layout.describe()}"
    )


# THREADS, QUEUES AND TIMING


class ThreadFailure(RuntimeError):
    """A Sebulba thread raised, or a queue wait timed out; carries the thread's traceback."""

    def __init__(self, thread_name: str, trace: str):
        super().__init__(f"{thread_name} failed:\n{trace.rstrip()}")
        self.thread_name = thread_name


class _Stopped(Exception):
    """The run is stopping; a waiting thread gives up quietly."""


class Lifetime:
    """Starts, watches and stops the threads of one run.

    Blocking operations poll in short slices so that a stop request or a partner's failure is
    noticed within `_POLL_S`; a wait longer than `timeout_s` is itself a failure (a hang).
    """

    _POLL_S = 0.05

    def __init__(self, timeout_s: float):
        self.timeout_s = timeout_s
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self._failures: List[Tuple[str, str]] = []
        self._threads: List[threading.Thread] = []

    def spawn(self, name: str, target: Callable[[], None]) -> None:
        def guarded() -> None:
            try:
                target()
            except _Stopped:
                pass
            except BaseException:  # noqa: BLE001 — any failure must reach the main thread
                self.fail(name, traceback.format_exc())

        # Daemon threads: an actor stuck inside a C extension cannot keep the process alive.
        thread = threading.Thread(target=guarded, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    @property
    def started(self) -> bool:
        return bool(self._threads)

    def fail(self, name: str, trace: str) -> None:
        with self._lock:
            self._failures.append((name, trace))
        self.stop.set()

    def check(self) -> None:
        """Raises the first failure of any thread as a `ThreadFailure`."""
        with self._lock:
            failure = self._failures[0] if self._failures else None
        if failure is not None:
            raise ThreadFailure(*failure)

    def put(self, channel: "queue.Queue[Any]", item: Any) -> None:
        """Puts `item`; raises `_Stopped` once the run stops (the put is then pointless)."""
        while not self.stop.is_set():
            try:
                channel.put(item, timeout=self._POLL_S)
                return
            except queue.Full:
                continue
        raise _Stopped

    def get(self, channel: "queue.Queue[Any]", waiting_for: str) -> Any:
        """Takes an item, raising a partner's failure, or a `ThreadFailure` after the timeout."""
        deadline = time.monotonic() + self.timeout_s
        while True:
            self.check()
            if self.stop.is_set():
                raise _Stopped
            try:
                return channel.get(timeout=self._POLL_S)
            except queue.Empty:
                if time.monotonic() > deadline:
                    raise ThreadFailure(
                        "learner",
                        f"waited {self.timeout_s:g} s for {waiting_for} (arch.thread_timeout_s)",
                    ) from None

    def shutdown(self, join_timeout_s: float = 10.0) -> List[str]:
        """Stops every thread; returns the names of those still running after the timeout."""
        self.stop.set()
        deadline = time.monotonic() + join_timeout_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return [t.name for t in self._threads if t.is_alive()]


class StageClock:
    """Seconds per pipeline stage, summed over threads, read and reset once per period."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seconds: Dict[str, float] = {}

    def add(self, stage: str, seconds: float) -> None:
        with self._lock:
            self._seconds[stage] = self._seconds.get(stage, 0.0) + seconds

    def take(self) -> Dict[str, float]:
        with self._lock:
            seconds, self._seconds = self._seconds, {}
        return seconds


class _Stopwatch:
    def __init__(self, clock: StageClock, stage: str):
        self._clock, self._stage = clock, stage

    def __enter__(self) -> None:
        self._start = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self._clock.add(self._stage, time.perf_counter() - self._start)


def _copy_to(tree: Any, device: jax.Device) -> Any:
    """A copy of `tree` on `device` that owns its buffers, whatever devices `tree` is on."""

    def copy_leaf(leaf: Any) -> Any:
        # `device_put(..., may_alias=False)` of an array replicated over several devices still
        # hands back its shard on `device` (jax 0.10); copying that shard itself does not.
        if isinstance(leaf, jax.Array):
            for shard in leaf.addressable_shards:
                if shard.device == device and shard.data.shape == leaf.shape:
                    return jax.device_put(shard.data, device, may_alias=False)
        return jax.device_put(leaf, device, may_alias=False)

    return jax.tree.map(copy_leaf, tree)


class ParamSource:
    """The newest actor parameters, copied to every actor device when published."""

    def __init__(self, devices: Sequence[jax.Device]):
        self._devices = tuple(dict.fromkeys(devices))
        self._lock = threading.Lock()
        self._copies: Dict[jax.Device, Params] = {}
        self._version = -1

    def publish(self, params: Params, version: int) -> None:
        # Always a copy: on a device the learner shares, `device_put` would otherwise return
        # the learner's own buffers, which the next (donating) update deletes under the actors.
        copies = {device: _copy_to(params, device) for device in self._devices}
        with self._lock:
            self._copies, self._version = copies, version

    def latest(self, device: jax.Device) -> Tuple[Params, int]:
        with self._lock:
            return self._copies[device], self._version


# ROLLOUTS


class Rollout(NamedTuple):
    """One actor's rollout, time-major. Steps t < T act on `observation[t]`;
    `observation[T]` is where the next rollout starts (the bootstrap observation)."""

    observation: Observation  # [T + 1, N, ...]
    extras: Any  # [T, N, ...] what the system's `act` kept for learning (e.g. action, log-prob)
    reward: jax.Array  # [T, N]
    terminated: jax.Array  # [T, N] bool
    truncated: jax.Array  # [T, N] bool
    valid: jax.Array  # [T, N] bool; False where the step only reset the env (see wrappers.host)


class EpisodeTally(NamedTuple):
    """Episodes that ended during one rollout."""

    count: int
    return_sum: float
    length_sum: int

    @staticmethod
    def of(step: HostStep) -> "EpisodeTally":
        done = step.episode_done
        return EpisodeTally(
            int(done.sum()),
            float(step.episode_return[done].sum()),
            int(step.episode_length[done].sum()),
        )

    def __add__(self, other: "EpisodeTally") -> "EpisodeTally":  # type: ignore[override]
        return EpisodeTally(
            self.count + other.count,
            self.return_sum + other.return_sum,
            self.length_sum + other.length_sum,
        )


class ActorOutput(NamedTuple):
    rollout: Rollout  # host (numpy) arrays
    params_version: int  # the learner update whose parameters acted
    episodes: EpisodeTally


def host_observation(step: HostStep) -> Observation:
    return Observation(
        agent_view=step.observation,
        action_mask=step.action_mask,
        step_count=np.zeros(step.reward.shape, np.int32),
    )


# A system's batched acting function: (params, observation [N], key) -> (env action [N],
# extras kept for learning, next key). It runs compiled on an actor device.
ActFn = Callable[[Params, Observation, PRNGKey], Tuple[jax.Array, Any, PRNGKey]]


def _actor_loop(
    env: HostVectorEnv,
    act: Callable[..., Any],
    device: jax.Device,
    key: PRNGKey,
    params: ParamSource,
    channel: "queue.Queue[ActorOutput]",
    lifetime: Lifetime,
    clock: StageClock,
    rollout_length: int,
    transfer_guard: str,
) -> None:
    try:
        with jax.transfer_guard(transfer_guard):
            step = env.reset()
            key = jax.device_put(key, device)
            while not lifetime.stop.is_set():
                actor_params, version = params.latest(device)
                observations, extras, steps = [host_observation(step)], [], []
                episodes = EpisodeTally(0, 0.0, 0)
                for _ in range(rollout_length):
                    with _Stopwatch(clock, "actor_inference"):
                        observation = jax.device_put(observations[-1], device)
                        env_action, kept, key = act(actor_params, observation, key)
                        env_action, kept = jax.device_get((env_action, kept))
                    with _Stopwatch(clock, "actor_env_step"):
                        step = env.step(np.asarray(env_action))
                    observations.append(host_observation(step))
                    extras.append(kept)
                    steps.append(step)
                    episodes = episodes + EpisodeTally.of(step)
                stack = lambda *xs: np.stack(xs)  # noqa: E731
                rollout = Rollout(
                    observation=jax.tree.map(stack, *observations),
                    extras=jax.tree.map(stack, *extras),
                    reward=np.stack([s.reward for s in steps]).astype(np.float32),
                    terminated=np.stack([s.terminated for s in steps]),
                    truncated=np.stack([s.truncated for s in steps]),
                    valid=np.stack([s.valid for s in steps]),
                )
                with _Stopwatch(clock, "actor_queue_wait"):
                    lifetime.put(channel, ActorOutput(rollout, version, episodes))
    finally:
        env.close()


# THE SYSTEM INTERFACE


class SebulbaBuildContext(NamedTuple):
    config: DictConfig
    spec: EnvSpec
    plan: RunPlan
    example_observation: Observation  # one env's observation, with a leading axis of 1


class SebulbaParts(NamedTuple):
    """What a Sebulba system hands the runner.

    init_learner: params key -> learner state (parameters, optimiser states, a key).
    actor_params: learner state -> what acting and evaluation need.
    act: batched acting on an actor device (see `ActFn`).
    learn: (learner state, rollout [T, N_local]) -> (learner state, loss info of scalars); it
        runs on each learner device's share of the envs; average gradients with
        `pmean_replicas`.
    eval_act: greedy flag -> (params, observation [N], key) -> actions [N].
    """

    init_learner: Callable[[PRNGKey], Any]
    actor_params: Callable[[Any], Params]
    act: ActFn
    learn: Callable[[Any, Rollout], Tuple[Any, Any]]
    eval_act: Callable[[bool], Callable[[Params, Observation, PRNGKey], jax.Array]]


@dataclass(frozen=True)
class SebulbaSystem:
    name: str
    action_kinds: Tuple[str, ...]
    build: Callable[[SebulbaBuildContext], SebulbaParts]
    validate: Callable[[DictConfig, RunPlan, SebulbaLayout], None] = lambda cfg, plan, layout: None


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
    layout = resolve_layout(cfg, jax.devices())
    plan = make_sebulba_plan(cfg, layout)
    system.validate(cfg, plan, layout)
    guard = str(OmegaConf.select(cfg, "arch.transfer_guard", default="allow"))
    if guard not in ("allow", "log", "disallow"):
        raise ConfigError(f"arch.transfer_guard={guard!r} must be allow, log or disallow")
    eval_env = _evaluation_env(cfg, plan.num_eval_episodes)
    actor_envs: List[HostVectorEnv] = []
    lifetime = Lifetime(float(cfg.arch.thread_timeout_s))
    try:
        if eval_env.spec.action_kind not in system.action_kinds:
            raise ConfigError(
                f"env={cfg.env.suite}/{cfg.env.task_name} has {eval_env.spec.action_kind} "
                f"actions but {system.name} handles only {' or '.join(system.action_kinds)}"
            )
        for actor in range(layout.num_actors):
            actor_envs.append(
                make_host_env(cfg.env, plan.envs_per_replica, int(cfg.arch.seed) + 7919 * actor)
            )
        with stop_on_signals() as stop_request:
            return _run(
                cfg, system, layout, plan, guard, eval_env, actor_envs, lifetime, stop_request
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
    layout: SebulbaLayout,
    plan: RunPlan,
    guard: str,
    eval_env: HostVectorEnv,
    actor_envs: Sequence[HostVectorEnv],
    lifetime: Lifetime,
    stop_request: StopRequest,
) -> SebulbaResult:
    from stoix.utils.logger import RunIdentity, check_tracker_settings

    plain = to_plain(cfg)
    check_tracker_settings(plain["logger"])
    run_dir, resume = run_directory(cfg, system, plain)
    seed = int(cfg.arch.seed)
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
    best_params = _copy_to(parts.actor_params(state), layout.evaluator_device)
    payload = CheckpointPayload(
        state, best_params, np.full((1,), -np.inf, np.float32), np.full((1,), HEALTHY, np.int64)
    )
    ckpt_cfg = cfg.logger.checkpointing
    checkpointer, payload, start_period = open_checkpoints(
        cfg, plain, run_dir, resume, payload, plan.num_evaluation
    )
    state = jax.device_put(payload.learner_state, replicated)
    best_params = _copy_to(payload.best_actor_params, layout.evaluator_device)
    best_return = float(np.asarray(payload.best_returns)[0])
    print(f"Run plan: {describe_plan(plan, layout)}")
    if plan.total_steps != plan.requested_steps:
        print(
            f"Warning: {plan.requested_steps:,} steps requested; {plan.total_steps:,} will run "
            f"so that every evaluation period holds {plan.updates_per_evaluation} whole updates."
        )

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
    eval_step = _make_eval_step(parts, bool(cfg.arch.evaluation_greedy))
    eval_compiled: EvalStepFn = eval_step.lower(
        best_params,
        jax.device_put(_tile(example, plan.num_eval_episodes), layout.evaluator_device),
        jax.device_put(example_key, layout.evaluator_device),
    ).compile()
    compile_seconds = time.perf_counter() - compile_start
    startup_compilations = compile_counter.count

    with writes_to(run_dir, None):
        logger = open_run_logger(cfg, plain, run_dir, resume, identity, plan)
    print(f"Writing to {run_dir} (compiled in {compile_seconds:.1f}s)")

    # START the actors once the first parameters are published.
    clock = StageClock()
    source = ParamSource(layout.actor_devices)
    version = start_period * plan.updates_per_evaluation
    source.publish(parts.actor_params(state), version)
    channels: List[queue.Queue[ActorOutput]] = []
    for actor, env in enumerate(actor_envs):
        channel: queue.Queue[ActorOutput] = queue.Queue(int(cfg.arch.pipeline_capacity))
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
        lifetime.spawn(f"actor-{actor}", lambda args=loop_args: _actor_loop(*args))

    eval_max_steps = int(cfg.arch.get("eval_max_steps") or eval_env.spec.max_episode_steps + 1)
    final_return = absolute_return = float("nan")
    learn_seconds = 0.0
    env_steps = 0
    stage_totals: Dict[str, float] = {}
    last_checkpoint = resumed_checkpoint(checkpointer, start_period)
    try:
        for period in range(start_period, plan.num_evaluation):
            if stop_request.requested:
                raise RunStopped(
                    tuple(stop_request.received),
                    period * plan.steps_per_evaluation,
                    last_checkpoint,
                )
            # LEARN: one rollout from every actor per update.
            period_start = time.perf_counter()
            infos, lags = [], []
            episodes = EpisodeTally(0, 0.0, 0)
            with jax.transfer_guard(guard):
                for _ in range(plan.updates_per_evaluation):
                    with _Stopwatch(clock, "learner_queue_wait"):
                        outputs = [
                            lifetime.get(channel, f"a rollout from actor-{i}")
                            for i, channel in enumerate(channels)
                        ]
                    with _Stopwatch(clock, "learner_step"):
                        batch = jax.device_put(_stack_rollouts(outputs), split_envs)
                        state, info = learn_compiled(state, batch)
                        jax.block_until_ready(state)
                    version += 1
                    with _Stopwatch(clock, "learner_param_publish"):
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
            actor_params = _copy_to(parts.actor_params(state), layout.evaluator_device)
            evaluation, eval_key = evaluate_on_host(
                eval_env, eval_compiled, actor_params, eval_key, eval_max_steps
            )
            eval_seconds = time.perf_counter() - eval_start
            final_return = float(evaluation["episode_return"].mean())
            if final_return > best_return:
                best_return, best_params = final_return, actor_params

            with writes_to(run_dir, last_checkpoint):
                logger.log_period(
                    period,
                    steps_done,
                    [train],
                    [evaluation],
                    {
                        "steps_per_second": plan.steps_per_evaluation / period_seconds,
                        "period_seconds": period_seconds,
                        "eval_seconds": eval_seconds,
                        "compile_seconds": compile_seconds,
                    },
                )
                if ckpt_cfg.save_model and checkpointer is not None:
                    checkpointer.save(
                        period,
                        CheckpointPayload(
                            state,
                            best_params,
                            np.asarray([best_return], np.float32),
                            np.full((1,), HEALTHY, np.int64),
                        ),
                        metric=final_return,
                        steps_done=steps_done,
                    )
                    last_checkpoint = checkpointer.directory / str(period)
        # The actors are not needed for the absolute metric.
        lifetime.shutdown()
        lifetime.check()
        if bool(cfg.arch.absolute_metric):
            chunks = []
            for _ in range(int(cfg.arch.absolute_metric_episode_multiplier)):
                chunk, eval_key = evaluate_on_host(
                    eval_env, eval_compiled, best_params, eval_key, eval_max_steps
                )
                chunks.append(chunk)
            absolute = {name: np.concatenate([c[name] for c in chunks]) for name in chunks[0]}
            with writes_to(run_dir, last_checkpoint):
                logger.log_absolute([absolute])
            absolute_return = float(absolute["episode_return"].mean())
    except _Stopped:
        lifetime.check()
        raise
    finally:
        with writes_to(run_dir, last_checkpoint):
            logger.close()
            if checkpointer is not None:
                checkpointer.close()
    if bool(cfg.arch.get("report_compiles", False)):
        print(f"XLA compilations: {compile_counter.count}")
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
