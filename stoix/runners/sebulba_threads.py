"""The objects of Sebulba's actor threads: their lifetime, the parameter source, the stage
clock, and the actor loop that fills the rollout pipeline.

* `Lifetime` owns every thread: a failure in any of them stops the run and is re-raised in the
  main thread with that thread's traceback; every queue operation has a timeout, so no thread
  can wait forever on a partner that died;
* `ParamSource` holds the newest actor parameters, copied to every actor device;
* `StageClock` sums the seconds spent per stage (env step, inference, queue waits, learner step,
  parameter transfer), read once per period so the bottleneck is visible.
"""

import queue
import threading
import time
import traceback
from typing import Any, Callable, Dict, List, NamedTuple, Sequence, Tuple

import jax
import numpy as np

from stoix.base_types import Observation, Params, PRNGKey
from stoix.errors import ThreadFailure
from stoix.system_api import Rollout
from stoix.wrappers.host import HostStep, HostVectorEnv


class Stopped(Exception):
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
            except Stopped:
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
        """Puts `item`; raises `Stopped` once the run stops (the put is then pointless)."""
        while not self.stop.is_set():
            try:
                channel.put(item, timeout=self._POLL_S)
                return
            except queue.Full:
                continue
        raise Stopped

    def get(self, channel: "queue.Queue[Any]", waiting_for: str) -> Any:
        """Takes an item, raising a partner's failure, or a `ThreadFailure` after the timeout."""
        deadline = time.monotonic() + self.timeout_s
        while True:
            self.check()
            if self.stop.is_set():
                raise Stopped
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


class Stopwatch:
    def __init__(self, clock: StageClock, stage: str):
        self._clock, self._stage = clock, stage

    def __enter__(self) -> None:
        self._start = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self._clock.add(self._stage, time.perf_counter() - self._start)


def copy_to(tree: Any, device: jax.Device) -> Any:
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
        copies = {device: copy_to(params, device) for device in self._devices}
        with self._lock:
            self._copies, self._version = copies, version

    def latest(self, device: jax.Device) -> Tuple[Params, int]:
        with self._lock:
            return self._copies[device], self._version


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


def actor_loop(
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
                    with Stopwatch(clock, "actor_inference"):
                        observation = jax.device_put(observations[-1], device)
                        env_action, kept, key = act(actor_params, observation, key)
                        env_action, kept = jax.device_get((env_action, kept))
                    with Stopwatch(clock, "actor_env_step"):
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
                with Stopwatch(clock, "actor_queue_wait"):
                    lifetime.put(channel, ActorOutput(rollout, version, episodes))
    finally:
        env.close()
