"""Multi-host set-up: several processes, each driving its own devices, in one device mesh.

With `arch.distributed.enabled=True` the runner joins a `jax.distributed` job before it touches
any device. From then on `jax.devices()` lists every process's devices, the Anakin mesh spans
them all and gradients are averaged across processes by the same `pmean` as on one host; only
moving data between Python and the devices changes:

* host → devices: every process computes the same full host array (seeds, keys, initial params
  are deterministic) and `to_global` hands each device its slice;
* devices → host: `to_host` gathers metrics and evaluation returns from every process, so each
  process takes the same decisions (best params, divergence checks) from the same numbers;
* RNG: keys are split per global device index, so each process's devices draw their own streams,
  and a run over P processes reproduces the single-process run over the same devices exactly;
* files: the console, JSON, TensorBoard and trackers, the run directory and the checkpoint's
  metadata, integrity record and retention belong to process 0. Orbax writes each sharded array
  from the processes that hold it, so no process ever has to hold the whole learner state.
"""

import socket
import sys
import time
from dataclasses import dataclass
from typing import Tuple

import jax
from omegaconf import DictConfig

from stoix.errors import ConfigError


@dataclass(frozen=True)
class DistributedSettings:
    """The `arch.distributed` config block; None fields are read from the cluster (SLURM)."""

    enabled: bool = False
    coordinator_address: str | None = None  # "host:port" of process 0
    num_processes: int | None = None
    process_id: int | None = None
    local_device_ids: Tuple[int, ...] | None = None
    initialization_timeout_s: int = 300


def distributed_settings(cfg: DictConfig) -> DistributedSettings:
    """Reads and checks `arch.distributed`; a missing block means a single-process run."""
    block = cfg.arch.get("distributed")
    if block is None or not bool(block.enabled):
        return DistributedSettings()
    address = block.get("coordinator_address")
    if address is not None:
        host, _, port = str(address).rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(
                f"arch.distributed.coordinator_address={address!r} is not host:port "
                "(e.g. 10.0.0.1:1234)"
            )
    num_processes = block.get("num_processes")
    process_id = block.get("process_id")
    if num_processes is not None and int(num_processes) < 1:
        raise ConfigError(f"arch.distributed.num_processes={num_processes} must be at least 1")
    if process_id is not None and int(process_id) < 0:
        raise ConfigError(f"arch.distributed.process_id={process_id} must be non-negative")
    if num_processes is not None and process_id is not None:
        if int(process_id) >= int(num_processes):
            raise ConfigError(
                f"arch.distributed.process_id={process_id} is out of range for "
                f"arch.distributed.num_processes={num_processes} (ids run from 0)"
            )
    local_ids = block.get("local_device_ids")
    timeout = int(block.get("initialization_timeout_s", 300))
    if timeout < 1:
        raise ConfigError(f"arch.distributed.initialization_timeout_s={timeout} must be positive")
    return DistributedSettings(
        enabled=True,
        coordinator_address=None if address is None else str(address),
        num_processes=None if num_processes is None else int(num_processes),
        process_id=None if process_id is None else int(process_id),
        local_device_ids=None if local_ids is None else tuple(int(i) for i in local_ids),
        initialization_timeout_s=timeout,
    )


def initialise_distributed(cfg: DictConfig) -> None:
    """Joins the multi-process job `arch.distributed` describes; a no-op when it is disabled.

    Must run before anything touches a device. Settings left null are detected from the cluster
    environment by jax (SLURM: one process per task, process 0 on the first node).
    """
    settings = distributed_settings(cfg)
    if not settings.enabled or jax.distributed.is_initialized():
        return
    if settings.coordinator_address is not None and settings.process_id not in (None, 0):
        _wait_for_coordinator(settings.coordinator_address, settings.initialization_timeout_s)
    explicit = None not in (
        settings.coordinator_address,
        settings.num_processes,
        settings.process_id,
    )
    if explicit:
        # jax aborts the process (no Python exception) when the job does not assemble in time;
        # this line is the context such an abort would otherwise lack.
        print(
            f"stoix: joining a jax.distributed job as process {settings.process_id} of "
            f"{settings.num_processes} via {settings.coordinator_address} (waiting up to "
            f"{settings.initialization_timeout_s} s)",
            file=sys.stderr,
        )
    try:
        jax.distributed.initialize(
            coordinator_address=settings.coordinator_address,
            num_processes=settings.num_processes,
            process_id=settings.process_id,
            local_device_ids=(
                None if settings.local_device_ids is None else list(settings.local_device_ids)
            ),
            initialization_timeout=settings.initialization_timeout_s,
        )
    except (ValueError, TypeError) as err:
        # jax names what it could neither read from the config nor detect from a cluster.
        raise ConfigError(
            f"arch.distributed is enabled but {_first_line(err)} (set "
            "arch.distributed.coordinator_address, num_processes and process_id, or run under "
            "SLURM)"
        ) from None
    except RuntimeError as err:
        # Backends already started, or the coordinator never answered.
        raise ConfigError(f"arch.distributed: cannot join the job ({_first_line(err)})") from None
    try:
        jax.devices()  # starts the backends, and with them the cross-process collectives
    except RuntimeError as err:
        hint = ""
        if "gloo" in str(err):
            host = socket.gethostname()
            hint = f"; CPU collectives (gloo) need this host's name, {host!r}, to resolve"
        raise ConfigError(
            f"arch.distributed: the devices did not start ({_first_line(err)}){hint}"
        ) from None


def _wait_for_coordinator(address: str, timeout_s: int) -> None:
    """Polls the coordinator's port, so that a wrong address or a process 0 that never started is
    a one-line error here rather than an abort inside jax."""
    host, _, port = address.rpartition(":")
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=1.0):
                return
        except OSError as err:
            if time.monotonic() >= deadline:
                raise ConfigError(
                    f"arch.distributed: no coordinator answered at {address} within "
                    f"{timeout_s} s ({err.strerror or err}); is process 0 running there?"
                ) from None
            time.sleep(0.2)


def _first_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__
