"""Multi-host Anakin: two processes on loopback (CPU collectives over gloo), one mesh."""

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Sequence, Tuple

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from omegaconf import DictConfig, OmegaConf

from stoix.checkpointing import config_fingerprint
from stoix.errors import ConfigError
from stoix.launch.multihost import distributed_settings
from tests.helpers import ONE_DEVICE_XLA_FLAGS, REPO, TINY, read_metrics, run_script

PPO = "stoix/systems/ppo/anakin/ff_ppo.py"
RUN = (*TINY, "arch.total_timesteps=4096", "logger.checkpointing.save_model=True")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _without_cluster(env: dict) -> dict:
    """The test's processes must not mistake a surrounding SLURM job for their own."""
    return {k: v for k, v in env.items() if not k.startswith(("SLURM_", "JAX_COORDINATOR"))}


def _start_process(
    process_id: int, port: int, base: Path, wrapper: Sequence[str] = ()
) -> subprocess.Popen:
    env = _without_cluster(dict(os.environ))
    env["XLA_FLAGS"] = ONE_DEVICE_XLA_FLAGS
    env["JAX_PLATFORMS"] = "cpu"
    overrides = [
        *RUN,
        "logger.use_console=True",
        f"logger.base_exp_path={base}",
        "arch.distributed.enabled=True",
        f"arch.distributed.coordinator_address=127.0.0.1:{port}",
        "arch.distributed.num_processes=2",
        f"arch.distributed.process_id={process_id}",
        "arch.distributed.initialization_timeout_s=120",
    ]
    return subprocess.Popen(
        [*wrapper, sys.executable, str(REPO / PPO), *overrides],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _latest_checkpoint(base: Path) -> dict:
    """The last checkpoint's arrays as numpy, read without any of the devices that wrote it."""
    (state_dir,) = [max(base.rglob("checkpoints/*/state"), key=lambda p: int(p.parent.name))]
    checkpointer = ocp.PyTreeCheckpointer()
    metadata = checkpointer.metadata(state_dir).item_metadata.tree
    as_numpy = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), metadata)
    restored = checkpointer.restore(state_dir, restore_args=as_numpy)
    return {
        jax.tree_util.keystr(path): leaf
        for path, leaf in jax.tree_util.tree_flatten_with_path(restored)[0]
    }


def _run_two_processes(base: Path, wrapper: Sequence[str] = ()) -> Tuple[list, list]:
    port = _free_port()
    processes = [_start_process(i, port, base, wrapper) for i in (0, 1)]
    outputs = []
    try:
        for process in processes:
            outputs.append(process.communicate(timeout=600))
    finally:
        for process in processes:
            process.kill()
    return processes, outputs


def test_two_processes_train_as_one_run_that_matches_one_process_on_two_devices(tmp_path):
    try:
        # gloo binds each process's collectives to the address its hostname resolves to.
        socket.getaddrinfo(socket.gethostname(), None)
    except OSError as err:
        pytest.skip(f"this machine's hostname does not resolve ({err}); gloo cannot connect")
    processes, outputs = _run_two_processes(tmp_path / "two_processes")
    for process, (_, stderr) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, stderr[-3000:]
    one = run_script(PPO, [*RUN, f"logger.base_exp_path={tmp_path / 'one_process'}"])
    assert one.returncode == 0, one.stderr[-3000:]

    # Process 0 logs and owns the run directory; process 1 prints and writes nothing of its own.
    assert "in 2 processes" in outputs[0][0] and "EVAL" in outputs[0][0]
    assert "EVAL" not in outputs[1][0] and "Writing to" not in outputs[1][0]
    (run_dir,) = (tmp_path / "two_processes" / "ff_ppo" / "gymnax_cartpole").iterdir()
    assert (run_dir / "config.yaml").is_file() and (run_dir / "metrics.json").is_file()

    # Same evaluations, episode for episode, as the single-process run over two devices.
    assert read_metrics(tmp_path / "two_processes") == read_metrics(tmp_path / "one_process")

    # Each process wrote its own device's slice of the learner state: the slices hold the same
    # parameters bit for bit (the gradient all-reduce crossed processes). The whole state —
    # params, optimiser, env states, RNG keys, counters — equals the single-process run's; float
    # leaves to the last bits only, as the two programs are compiled for different collectives
    # (measured: the actor's params differ by at most 9e-8, the critic's not at all).
    split = _latest_checkpoint(tmp_path / "two_processes")
    single = _latest_checkpoint(tmp_path / "one_process")
    assert split.keys() == single.keys()
    params = [key for key in split if key.startswith("['learner_state']['params']")]
    assert params
    for key in params:
        assert split[key].shape[0] == 2
        np.testing.assert_array_equal(split[key][0], split[key][1], err_msg=key)
    for key in split:
        if np.issubdtype(split[key].dtype, np.floating):
            np.testing.assert_allclose(split[key], single[key], rtol=1e-5, atol=1e-6, err_msg=key)
        else:
            np.testing.assert_array_equal(split[key], single[key], err_msg=key)

    # The jointly written checkpoint is one run's: a single process on two devices resumes it.
    resumed = run_script(PPO, [*RUN, f"logger.checkpointing.load_path={run_dir}"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"Resuming {run_dir} after evaluation 2/2" in resumed.stdout


def test_devices_that_cannot_start_their_collectives_stop_both_processes_with_one_line(tmp_path):
    # A host name that does not resolve (its own UTS namespace) leaves gloo without an address.
    wrapper = ("unshare", "-u", "sh", "-c", 'hostname stoix-unresolvable && exec "$0" "$@"')
    if shutil.which("unshare") is None or subprocess.run([*wrapper, "true"]).returncode != 0:
        pytest.skip("cannot give a process its own host name here (needs unshare and root)")
    base = tmp_path / "runs"
    processes, outputs = _run_two_processes(base, wrapper)
    for process, (_, stderr) in zip(processes, outputs, strict=True):
        assert process.returncode == 2, stderr[-3000:]
        error = stderr.strip().splitlines()[-1]
        assert error.startswith("stoix: error: arch.distributed: the devices did not start")
        assert "'stoix-unresolvable', to resolve" in error
    assert not base.exists()


def test_a_process_whose_coordinator_never_answers_stops_with_one_line(tmp_path):
    env = _without_cluster(dict(os.environ))
    result = run_script(
        PPO,
        [
            f"logger.base_exp_path={tmp_path}",
            "arch.distributed.enabled=True",
            f"arch.distributed.coordinator_address=127.0.0.1:{_free_port()}",
            "arch.distributed.num_processes=2",
            "arch.distributed.process_id=1",
            "arch.distributed.initialization_timeout_s=2",
        ],
        timeout=120,
        extra_env=env,
    )
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("stoix: error: arch.distributed: no coordinator answered at 127.0.0.1")
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


def _arch(**distributed) -> DictConfig:
    block = {"enabled": True, **distributed}
    return OmegaConf.create({"arch": {"distributed": block}})


@pytest.mark.parametrize(
    "settings, named",
    [
        ({"coordinator_address": "localhost"}, "coordinator_address='localhost'"),
        ({"coordinator_address": "host:99999"}, "coordinator_address='host:99999'"),
        ({"num_processes": 0}, "num_processes=0"),
        ({"process_id": -1}, "process_id=-1"),
        ({"num_processes": 2, "process_id": 2}, "process_id=2 is out of range"),
        ({"initialization_timeout_s": 0}, "initialization_timeout_s=0"),
    ],
)
def test_impossible_distributed_settings_are_refused_naming_the_key(settings, named):
    with pytest.raises(ConfigError, match=named.replace("(", r"\(")):
        distributed_settings(_arch(**settings))


def test_disabled_or_absent_block_means_one_process():
    assert not distributed_settings(OmegaConf.create({"arch": {}})).enabled
    assert not distributed_settings(_arch(enabled=False, process_id=-5)).enabled


def test_which_process_and_where_it_joins_do_not_change_the_run_identity():
    base = {"arch": {"seed": 1, "distributed": {"enabled": False}}, "system": {"lr": 1e-3}}
    joined = {
        "arch": {
            "seed": 1,
            "distributed": {"enabled": True, "process_id": 1, "coordinator_address": "h:1"},
        },
        "system": {"lr": 1e-3},
    }
    assert config_fingerprint(base) == config_fingerprint(joined)
    joined["arch"]["seed"] = 2
    assert config_fingerprint(base) != config_fingerprint(joined)
