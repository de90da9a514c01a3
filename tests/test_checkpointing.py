"""Tests of the orbax checkpointer: round trips, retention, and refusing unusable checkpoints."""

import os

# Two CPU devices, set before jax is imported, so sharded payloads are really sharded.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")

import copy  # noqa: E402
import math  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Dict, NamedTuple  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from jax.sharding import Mesh, NamedSharding, PartitionSpec  # noqa: E402

from stoix.utils import checkpointing  # noqa: E402
from stoix.utils.checkpointing import (  # noqa: E402
    Checkpointer,
    CheckpointError,
    config_fingerprint,
    find_resumable_run,
)


class Params(NamedTuple):
    """Network parameters, unsharded."""

    weights: jax.Array  # (3, 4) float32
    bias: jax.Array  # (4,) float32


class Counters(NamedTuple):
    """Step counter and RNG, unsharded."""

    steps: jax.Array  # () int32
    key: jax.Array  # (2,) uint32, raw PRNG key data


class LearnerState(NamedTuple):
    """A miniature full learner state: params, counters, sharded env states, host data."""

    params: Params
    counters: Counters
    env_states: Dict[str, jax.Array]  # each (num_envs, ...) sharded over devices on axis 0
    host_buffer: np.ndarray  # (5,) float64, kept on the host


def _config(epochs: int = 4, base_exp_path: str = "results") -> Dict[str, Any]:
    return {
        "arch": {"seed": 42, "total_timesteps": 1000, "num_evaluation": 5},
        "system": {"epochs": epochs, "rollout_length": 8, "actor_lr": 3e-4},
        "env": {"name": "CartPole-v1"},
        "logger": {
            "base_exp_path": base_exp_path,
            "checkpointing": {"save_model": True, "load_model": False},
        },
    }


def _device_sharding() -> NamedSharding:
    mesh = Mesh(np.array(jax.devices()), ("device",))
    return NamedSharding(mesh, PartitionSpec("device"))


def _state(seed: int = 0) -> LearnerState:
    key = jax.random.PRNGKey(seed)
    weights_key, bias_key, env_key = jax.random.split(key, 3)
    sharding = _device_sharding()
    return LearnerState(
        params=Params(
            weights=jax.random.normal(weights_key, (3, 4)),
            bias=jax.random.normal(bias_key, (4,)),
        ),
        counters=Counters(steps=jnp.asarray(seed * 10, dtype=jnp.int32), key=key),
        env_states={
            "position": jax.device_put(jax.random.uniform(env_key, (4, 3)), sharding),
            "step_count": jax.device_put(jnp.arange(4, dtype=jnp.int32), sharding),
        },
        host_buffer=np.linspace(0.0, 1.0, 5) + seed,
    )


def _zeros_like(state: LearnerState) -> LearnerState:
    """A restore target with the same layout and placement but different values."""
    return jax.tree.map(
        lambda leaf: (
            np.zeros_like(leaf)
            if isinstance(leaf, np.ndarray)
            else jax.device_put(jnp.zeros_like(leaf), leaf.sharding)
        ),
        state,
    )


def _assert_same(restored: Any, expected: Any) -> None:
    assert jax.tree.structure(restored) == jax.tree.structure(expected)
    for got, want in zip(jax.tree.leaves(restored), jax.tree.leaves(expected), strict=True):
        assert type(got) is type(want)
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
        if isinstance(want, jax.Array):
            assert got.sharding == want.sharding


def _save_periods(checkpointer: Checkpointer, metrics: list) -> None:
    for period, metric in enumerate(metrics):
        checkpointer.save(period, _state(period), metric=metric, steps_done=100 * (period + 1))


def test_round_trip_keeps_values_dtypes_and_shardings(tmp_path: Path) -> None:
    state = _state(seed=3)
    assert state.env_states["position"].sharding.spec == PartitionSpec("device")
    with Checkpointer(tmp_path / "checkpoints", _config()) as checkpointer:
        checkpointer.save(0, state, metric=12.5, steps_done=640)
        target = _zeros_like(state)
        restored, info = checkpointer.restore(target)

    _assert_same(restored, state)
    assert restored.counters.key.dtype == jnp.uint32
    assert len(restored.env_states["position"].sharding.device_set) == 2
    assert info == checkpointing.CheckpointInfo(
        period=0,
        steps_done=640,
        metric=12.5,
        format_version=checkpointing.FORMAT_VERSION,
        fingerprint=config_fingerprint(_config()),
    )


def test_round_trip_of_typed_keys_scalars_and_empty_nodes(tmp_path: Path) -> None:
    sharding = _device_sharding()

    def payload(seed: int) -> Dict[str, Any]:
        return {
            "env_keys": jax.device_put(jax.random.split(jax.random.key(seed), 4), sharding),
            "loss_scale": np.float32(seed),
            "half": jnp.full((3,), seed, dtype=jnp.bfloat16),
            "optional_part": None,
        }

    with Checkpointer(tmp_path / "checkpoints", _config()) as checkpointer:
        checkpointer.save(0, payload(5), metric=1.0, steps_done=10)
        restored, _ = checkpointer.restore(payload(0))

    expected = payload(5)
    assert restored["env_keys"].sharding == sharding
    assert jax.dtypes.issubdtype(restored["env_keys"].dtype, jax.dtypes.prng_key)
    np.testing.assert_array_equal(
        jax.random.key_data(restored["env_keys"]), jax.random.key_data(expected["env_keys"])
    )
    assert type(restored["loss_scale"]) is np.float32 and restored["loss_scale"] == 5
    _assert_same(restored["half"], expected["half"])
    assert restored["optional_part"] is None


def test_a_new_checkpointer_resumes_from_disk(tmp_path: Path) -> None:
    directory = tmp_path / "checkpoints"
    first = Checkpointer(directory, _config())
    _save_periods(first, [1.0, 2.0])
    first.close()

    # A logger-only change (new output path) must still resume.
    second = Checkpointer(directory, _config(base_exp_path="elsewhere"))
    assert second.latest_period() == 1
    restored, info = second.restore(_zeros_like(_state()))
    _assert_same(restored, _state(1))
    assert (info.period, info.steps_done) == (1, 200)
    second.save(2, _state(2), metric=0.5, steps_done=300)
    assert second.latest_period() == 2
    second.close()


def test_keeps_latest_and_best(tmp_path: Path) -> None:
    directory = tmp_path / "checkpoints"
    checkpointer = Checkpointer(directory, _config(), keep_latest=1, keep_best=1)
    _save_periods(checkpointer, [1.0, 5.0, 2.0, 3.0, 0.0])

    assert checkpointer.latest_period() == 4
    assert sorted(p.name for p in directory.iterdir() if p.name.isdigit()) == ["1", "4"]
    restored, info = checkpointer.restore(_zeros_like(_state()), period=1)
    _assert_same(restored, _state(1))
    assert (info.period, info.metric) == (1, 5.0)
    with pytest.raises(CheckpointError, match="period 2"):
        checkpointer.restore(_zeros_like(_state()), period=2)
    checkpointer.close()

    # Retention still ranks by the stored metrics after a restart.
    reopened = Checkpointer(directory, _config(), keep_latest=1, keep_best=1)
    reopened.save(5, _state(5), metric=4.0, steps_done=600)
    assert sorted(p.name for p in directory.iterdir() if p.name.isdigit()) == ["1", "5"]
    reopened.close()


def test_saving_an_old_period_is_refused(tmp_path: Path) -> None:
    with Checkpointer(tmp_path / "checkpoints", _config()) as checkpointer:
        _save_periods(checkpointer, [1.0, 2.0])
        with pytest.raises(ValueError, match="periods must increase"):
            checkpointer.save(1, _state(), metric=0.0, steps_done=0)


def test_nan_metric_still_saves_and_ranks_last(tmp_path: Path) -> None:
    directory = tmp_path / "checkpoints"
    with Checkpointer(directory, _config()) as checkpointer:
        _save_periods(checkpointer, [1.0, math.nan, 0.0])
        assert sorted(p.name for p in directory.iterdir() if p.name.isdigit()) == ["0", "2"]


def test_fingerprint_ignores_logger_only() -> None:
    base = config_fingerprint(_config())
    assert config_fingerprint(_config(base_exp_path="/somewhere/else")) == base
    no_logger = copy.deepcopy(_config())
    del no_logger["logger"]
    assert config_fingerprint(no_logger) == base
    assert config_fingerprint(_config(epochs=2)) != base


def test_config_mismatch_names_the_key(tmp_path: Path) -> None:
    directory = tmp_path / "checkpoints"
    with Checkpointer(directory, _config(epochs=4)) as checkpointer:
        checkpointer.save(0, _state(), metric=1.0, steps_done=10)

    with Checkpointer(directory, _config(epochs=2)) as checkpointer:
        with pytest.raises(CheckpointError, match="system.epochs: checkpoint 4, now 2"):
            checkpointer.restore(_zeros_like(_state()))


def test_format_version_mismatch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    directory = tmp_path / "checkpoints"
    with Checkpointer(directory, _config()) as checkpointer:
        checkpointer.save(0, _state(), metric=1.0, steps_done=10)

    monkeypatch.setattr(checkpointing, "FORMAT_VERSION", checkpointing.FORMAT_VERSION + 1)
    with Checkpointer(directory, _config()) as checkpointer:
        with pytest.raises(CheckpointError, match="format version"):
            checkpointer.restore(_zeros_like(_state()))


def _latest_step_dir(directory: Path) -> Path:
    return max((p for p in directory.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))


def test_truncated_array_data_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "checkpoints"
    with Checkpointer(directory, _config(), keep_latest=2) as checkpointer:
        _save_periods(checkpointer, [1.0, 2.0])

    data_files = [p for p in (_latest_step_dir(directory) / "state").rglob("*") if p.is_file()]
    data_files = [p for p in data_files if p.parent.name == "d"]
    assert data_files, "expected orbax array data files"
    for path in data_files:
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])

    with Checkpointer(directory, _config()) as checkpointer:
        with pytest.raises(CheckpointError, match="is corrupt: state/.* bytes instead of"):
            checkpointer.restore(_zeros_like(_state()))
        # The older checkpoint is untouched and still usable.
        restored, _ = checkpointer.restore(_zeros_like(_state()), period=0)
    _assert_same(restored, _state(0))


def test_flipped_bit_in_array_data_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "checkpoints"
    payload = {"weights": jax.random.normal(jax.random.PRNGKey(0), (256, 256))}
    with Checkpointer(directory, _config()) as checkpointer:
        checkpointer.save(0, payload, metric=1.0, steps_done=10)

    # Orbax itself restores such a file without complaint, with one wrong value.
    data_files = [p for p in (_latest_step_dir(directory) / "state").rglob("*") if p.is_file()]
    largest = max(data_files, key=lambda p: p.stat().st_size)
    data = bytearray(largest.read_bytes())
    data[len(data) // 2] ^= 0x10
    largest.write_bytes(bytes(data))

    with Checkpointer(directory, _config()) as checkpointer:
        with pytest.raises(CheckpointError, match="has been altered"):
            checkpointer.restore(payload)


# The middle case is metadata of the right version with every other field missing.
@pytest.mark.parametrize(
    "garbage",
    [b"{not json", f'{{"format_version": {checkpointing.FORMAT_VERSION}}}'.encode(), b"[]"],
)
@pytest.mark.parametrize("with_integrity_file", [True, False])
def test_garbage_metadata_is_refused(
    tmp_path: Path, garbage: bytes, with_integrity_file: bool
) -> None:
    directory = tmp_path / "checkpoints"
    with Checkpointer(directory, _config()) as checkpointer:
        checkpointer.save(0, _state(), metric=1.0, steps_done=10)

    step_dir = _latest_step_dir(directory)
    (step_dir / "meta" / "metadata").write_bytes(garbage)
    if not with_integrity_file:
        # As after a kill between orbax's commit and the integrity file being written.
        (step_dir / "integrity.json").unlink()
    with Checkpointer(directory, _config()) as checkpointer:
        with pytest.raises(CheckpointError, match="(unreadable metadata|is corrupt)"):
            checkpointer.restore(_zeros_like(_state()))


def test_garbage_array_metadata_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "checkpoints"
    with Checkpointer(directory, _config()) as checkpointer:
        checkpointer.save(0, _state(), metric=1.0, steps_done=10)

    step_dir = _latest_step_dir(directory)
    (step_dir / "state" / "_METADATA").write_bytes(b"\x00garbage")
    with Checkpointer(directory, _config()) as checkpointer:
        with pytest.raises(CheckpointError, match="_METADATA has .* bytes instead of"):
            checkpointer.restore(_zeros_like(_state()))

    # Without the integrity file, orbax's own failure is still reported as a CheckpointError.
    (step_dir / "integrity.json").unlink()
    with Checkpointer(directory, _config()) as checkpointer:
        with pytest.raises(CheckpointError, match="corrupt or unreadable"):
            checkpointer.restore(_zeros_like(_state()))


def test_layout_mismatch_with_target(tmp_path: Path) -> None:
    state = _state()
    with Checkpointer(tmp_path / "checkpoints", _config()) as checkpointer:
        checkpointer.save(0, state, metric=1.0, steps_done=10)

        wider = state._replace(params=state.params._replace(bias=jnp.zeros((5,))))
        with pytest.raises(CheckpointError, match=r"params\.bias: checkpoint float32\[4\]"):
            checkpointer.restore(wider)

        as_int = state._replace(host_buffer=np.zeros(5, dtype=np.int64))
        with pytest.raises(CheckpointError, match="host_buffer"):
            checkpointer.restore(as_int)

        fewer_envs = dict(state.env_states)
        del fewer_envs["step_count"]
        with pytest.raises(CheckpointError, match="only the checkpoint has env_states.step_count"):
            checkpointer.restore(state._replace(env_states=fewer_envs))


def test_empty_directory_is_refused_and_not_created(tmp_path: Path) -> None:
    with Checkpointer(tmp_path / "empty", _config()) as checkpointer:
        assert checkpointer.latest_period() is None
        with pytest.raises(CheckpointError, match="No checkpoint found"):
            checkpointer.restore(_zeros_like(_state()))
    assert not (tmp_path / "empty").exists()


def test_interrupted_save_leftovers_are_ignored(tmp_path: Path) -> None:
    directory = tmp_path / "checkpoints"
    with Checkpointer(directory, _config()) as checkpointer:
        checkpointer.save(0, _state(), metric=1.0, steps_done=10)
    # What a kill -9 in the middle of saving period 1 leaves behind.
    partial = directory / "1.orbax-checkpoint-tmp-1234567890"
    (partial / "state").mkdir(parents=True)
    (partial / "state" / "_METADATA").write_text("{")

    with Checkpointer(directory, _config()) as checkpointer:
        assert checkpointer.latest_period() == 0
        restored, info = checkpointer.restore(_zeros_like(_state()))
        assert info.period == 0
        checkpointer.save(1, _state(1), metric=2.0, steps_done=20)
        assert checkpointer.latest_period() == 1
    _assert_same(restored, _state(0))
    assert not partial.exists()


def test_find_resumable_run(tmp_path: Path) -> None:
    runs_root = tmp_path / "runs"
    assert find_resumable_run(runs_root, _config()) is None

    for run_id, config in [
        ("older", _config()),
        ("newer", _config(base_exp_path="other")),
        ("other_config", _config(epochs=7)),
    ]:
        with Checkpointer(runs_root / run_id / "checkpoints", config) as checkpointer:
            checkpointer.save(0, _state(), metric=1.0, steps_done=10)
    (runs_root / "no_checkpoints").mkdir()
    # Set times explicitly: file-system timestamps can tie within one test.
    for age, run_id in enumerate(["other_config", "newer", "older"]):
        stamp = 1_700_000_000 - 100 * age
        for path in [runs_root / run_id, *(runs_root / run_id / "checkpoints").iterdir()]:
            os.utime(path, (stamp, stamp))

    assert find_resumable_run(runs_root, _config()) == runs_root / "newer"
    assert find_resumable_run(runs_root, _config(epochs=7)) == runs_root / "other_config"
    assert find_resumable_run(runs_root, _config(epochs=9)) is None
