"""Tests of the orbax checkpointer: round trips, retention, resuming from the newest complete and
intact checkpoint, and refusing checkpoints that can never suit the run."""

import os

# Two CPU devices, set before jax is imported, so sharded payloads are really sharded.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")

import copy  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Dict, List, NamedTuple  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from jax.sharding import Mesh, NamedSharding, PartitionSpec  # noqa: E402

from stoix.checkpointing import (  # noqa: E402
    Checkpointer,
    CheckpointError,
    CheckpointInfo,
    config_fingerprint,
    find_resumable_run,
    integrity,
)
from stoix.checkpointing import checkpointer as checkpointer_module  # noqa: E402
from stoix.errors import ConfigError  # noqa: E402


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
        restored, info, skipped = checkpointer.restore(target)

    assert skipped == ()
    _assert_same(restored, state)
    assert restored.counters.key.dtype == jnp.uint32
    assert len(restored.env_states["position"].sharding.device_set) == 2
    assert info == CheckpointInfo(
        period=0,
        steps_done=640,
        metric=12.5,
        format_version=checkpointer_module.FORMAT_VERSION,
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
        restored = checkpointer.restore(payload(0)).payload

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
    restored, info, _ = second.restore(_zeros_like(_state()))
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
    restored, info, _ = checkpointer.restore(_zeros_like(_state()), period=1)
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

    monkeypatch.setattr(
        checkpointer_module, "FORMAT_VERSION", checkpointer_module.FORMAT_VERSION + 1
    )
    with Checkpointer(directory, _config()) as checkpointer:
        with pytest.raises(CheckpointError, match="format version"):
            checkpointer.restore(_zeros_like(_state()))


def _latest_step_dir(directory: Path) -> Path:
    return max((p for p in directory.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))


def _array_files(step_dir: Path) -> List[Path]:
    """The array data files of a checkpoint, largest first."""
    files = [p for p in (step_dir / "state").rglob("*") if p.is_file() and p.parent.name == "d"]
    assert files, "expected orbax array data files"
    return sorted(files, key=lambda p: p.stat().st_size, reverse=True)


def _flip_a_bit(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))


def _big_payload(seed: int) -> Dict[str, jax.Array]:
    # Large enough that a flipped bit lands in raw array bytes, which orbax restores silently.
    return {"weights": jax.random.normal(jax.random.PRNGKey(seed), (256, 256))}


def _rewrite_metadata(step_dir: Path, edit: Any) -> None:
    """Changes a checkpoint's metadata and records the result, as a buggy writer would."""
    path = step_dir / "meta" / "metadata"
    path.write_text(json.dumps(edit(json.loads(path.read_text()))))
    integrity.write_record(step_dir, checkpointer_module.FORMAT_VERSION)


def test_integrity_record_covers_every_file_of_the_checkpoint(tmp_path: Path) -> None:
    directory = tmp_path / "checkpoints"
    with Checkpointer(directory, _config()) as checkpointer:
        checkpointer.save(0, _state(), metric=1.0, steps_done=10)

    step_dir = directory / "0"
    record = integrity.read_record(step_dir)
    on_disk = {
        p.relative_to(step_dir).as_posix()
        for p in step_dir.rglob("*")
        if p.is_file() and p.name != "integrity.json"
    }
    assert record.format_version == checkpointer_module.FORMAT_VERSION == 3
    assert set(record.files) == on_disk
    assert "_CHECKPOINT_METADATA" in on_disk and "meta/metadata" in on_disk

    # Orbax's own bookkeeping is checked too: it is read before any array is.
    (step_dir / "_CHECKPOINT_METADATA").write_text("{}")
    with Checkpointer(directory, _config()) as checkpointer:
        with pytest.raises(CheckpointError, match=r"_CHECKPOINT_METADATA has .* bytes instead"):
            checkpointer.restore(_zeros_like(_state()), period=0)


def test_a_checkpoint_without_its_record_is_never_loaded(tmp_path: Path) -> None:
    directory = tmp_path / "checkpoints"
    with Checkpointer(directory, _config(), keep_latest=2) as checkpointer:
        checkpointer.save(0, _big_payload(0), metric=1.0, steps_done=10)
        checkpointer.save(1, _big_payload(1), metric=2.0, steps_done=20)

    # What a kill between orbax's commit and the record leaves, with a bit flipped since.
    (directory / "1" / "integrity.json").unlink()
    _flip_a_bit(_array_files(directory / "1")[0])

    with Checkpointer(directory, _config()) as checkpointer:
        assert checkpointer.latest_period() == 0
        restored, info, skipped = checkpointer.restore(_big_payload(7))
    assert info.period == 0
    _assert_same(restored, _big_payload(0))
    assert [(s.period, s.moved_to) for s in skipped] == [(1, directory / "_rejected" / "1")]
    assert skipped[0].reason.startswith("is incomplete: it has no integrity.json")
    assert not (directory / "1").exists() and (directory / "_rejected" / "1" / "state").is_dir()


def test_resume_takes_the_newest_intact_checkpoint_and_saves_after_it(tmp_path: Path) -> None:
    directory = tmp_path / "checkpoints"
    with Checkpointer(directory, _config(), keep_latest=5) as checkpointer:
        for period in range(5):
            checkpointer.save(period, _big_payload(period), metric=period, steps_done=period)

    (directory / "4" / "integrity.json").unlink()
    _flip_a_bit(_array_files(directory / "3")[0])
    _flip_a_bit(directory / "2" / "integrity.json")
    _rewrite_metadata(directory / "1", lambda raw: {**raw, "period": "one"})

    checkpointer = Checkpointer(directory, _config(), keep_latest=2, keep_best=0)
    restored, info, skipped = checkpointer.restore(_big_payload(7))
    assert info.period == 0
    _assert_same(restored, _big_payload(0))
    reasons = {s.period: s.reason for s in skipped}
    assert list(reasons) == [4, 3, 2, 1]
    assert reasons[4].startswith("is incomplete")
    assert reasons[3].startswith("is corrupt: state/") and "has been altered" in reasons[3]
    assert reasons[2].startswith("has a damaged integrity.json")
    assert reasons[1].startswith("has unreadable metadata (ValueError")
    assert sorted(p.name for p in (directory / "_rejected").iterdir()) == ["1", "2", "3", "4"]

    # The set-aside checkpoints are out of the way: saving continues after period 0, and
    # retention ranks only real checkpoints.
    for period in (1, 2, 3):
        checkpointer.save(period, _big_payload(period), metric=0.0, steps_done=period)
    checkpointer.close()
    assert sorted(p.name for p in directory.iterdir() if p.name.isdigit()) == ["2", "3"]
    with Checkpointer(directory, _config()) as reopened:
        restored, info, skipped = reopened.restore(_big_payload(7))
    assert (info.period, skipped) == (3, ())
    _assert_same(restored, _big_payload(3))


def test_a_save_killed_before_its_record_keeps_the_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Killed(BaseException):
        """Stands for a kill -9 right after orbax committed the step directory."""

    directory = tmp_path / "checkpoints"
    checkpointer = Checkpointer(directory, _config(), keep_latest=1, keep_best=0)
    checkpointer.save(0, _state(0), metric=1.0, steps_done=10)

    def killed(*args: Any) -> None:
        raise Killed

    monkeypatch.setattr(checkpointer_module, "write_record", killed)
    with pytest.raises(Killed):
        checkpointer.save(1, _state(1), metric=2.0, steps_done=20)
    monkeypatch.undo()

    # Retention must not have dropped period 0 for a checkpoint that never became complete.
    with Checkpointer(directory, _config(), keep_latest=1, keep_best=0) as resumed:
        restored, info, skipped = resumed.restore(_zeros_like(_state()))
        assert info.period == 0 and [s.period for s in skipped] == [1]
        _assert_same(restored, _state(0))
        resumed.save(1, _state(1), metric=2.0, steps_done=20)
    assert sorted(p.name for p in directory.iterdir() if p.name.isdigit()) == ["1"]


def test_no_usable_checkpoint_lists_each_reason_and_moves_nothing(tmp_path: Path) -> None:
    directory = tmp_path / "checkpoints"
    with Checkpointer(directory, _config(), keep_latest=2) as checkpointer:
        _save_periods(checkpointer, [1.0, 2.0])
    (directory / "0" / "integrity.json").unlink()
    _flip_a_bit(directory / "1" / "meta" / "metadata")

    with Checkpointer(directory, _config()) as checkpointer:
        with pytest.raises(CheckpointError) as refusal:
            checkpointer.restore(_zeros_like(_state()))
    message = str(refusal.value)
    assert message.startswith(f"No usable checkpoint in {directory}: checkpoint 1 is corrupt: ")
    assert "meta/metadata has been altered; checkpoint 0 is incomplete" in message
    assert "\n" not in message
    assert sorted(p.name for p in directory.iterdir()) == ["0", "1"]


def test_truncated_array_data_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "checkpoints"
    with Checkpointer(directory, _config(), keep_latest=2) as checkpointer:
        _save_periods(checkpointer, [1.0, 2.0])

    for path in _array_files(_latest_step_dir(directory)):
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])

    with Checkpointer(directory, _config()) as checkpointer:
        # Asked for by period, it is refused and left where it is.
        with pytest.raises(CheckpointError, match="1 is corrupt: state/.* bytes instead of"):
            checkpointer.restore(_zeros_like(_state()), period=1)
        assert (directory / "1").is_dir()
        # Resuming falls back to the untouched older checkpoint.
        restored, info, skipped = checkpointer.restore(_zeros_like(_state()))
    assert info.period == 0 and [s.period for s in skipped] == [1]
    _assert_same(restored, _state(0))


def test_flipped_bit_in_array_data_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "checkpoints"
    with Checkpointer(directory, _config()) as checkpointer:
        checkpointer.save(0, _big_payload(0), metric=1.0, steps_done=10)

    # Orbax itself restores such a file without complaint, with one wrong value.
    _flip_a_bit(_array_files(_latest_step_dir(directory))[0])

    with Checkpointer(directory, _config()) as checkpointer:
        with pytest.raises(CheckpointError, match="has been altered"):
            checkpointer.restore(_big_payload(0))


# The middle case is metadata of the right version with every other field missing.
@pytest.mark.parametrize(
    "garbage",
    [b"{not json", f'{{"format_version": {checkpointer_module.FORMAT_VERSION}}}'.encode(), b"[]"],
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
    expected = "is corrupt: meta/metadata" if with_integrity_file else "is incomplete"
    with Checkpointer(directory, _config()) as checkpointer:
        with pytest.raises(
            CheckpointError, match=f"No usable checkpoint .*: checkpoint 0 {expected}"
        ):
            checkpointer.restore(_zeros_like(_state()))

    # Metadata its record vouches for, yet unreadable, is refused as unreadable.
    if garbage != b"{not json":
        integrity.write_record(step_dir, checkpointer_module.FORMAT_VERSION)
        with Checkpointer(directory, _config()) as checkpointer:
            with pytest.raises(CheckpointError, match="0 has unreadable metadata"):
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

    # Files that match their record but that orbax cannot read: its failure is one line too.
    integrity.write_record(step_dir, checkpointer_module.FORMAT_VERSION)
    with Checkpointer(directory, _config()) as checkpointer:
        with pytest.raises(CheckpointError, match="checkpoint 0 cannot be read") as refusal:
            checkpointer.restore(_zeros_like(_state()))
    assert "\n" not in str(refusal.value)


def test_an_older_format_version_is_refused_in_one_line(tmp_path: Path) -> None:
    directory = tmp_path / "checkpoints"
    with Checkpointer(directory, _config()) as checkpointer:
        checkpointer.save(0, _state(), metric=1.0, steps_done=10)

    # A version-2 checkpoint: its metadata says so, and its record is a bare map of file sums.
    step_dir = directory / "0"
    metadata = step_dir / "meta" / "metadata"
    raw = json.loads(metadata.read_text())
    metadata.write_text(json.dumps({**raw, "format_version": 2}))
    sums = integrity._file_sums(step_dir, ["meta/metadata"])
    (step_dir / "integrity.json").write_text(json.dumps({k: list(v) for k, v in sums.items()}))

    with Checkpointer(directory, _config()) as checkpointer:
        with pytest.raises(CheckpointError) as refusal:
            checkpointer.restore(_zeros_like(_state()))
    assert str(refusal.value) == (
        f"Checkpoint {step_dir} has format version 2, but this code reads version 3; start a "
        "new run or use a matching Stoix version."
    )
    assert (directory / "0").is_dir(), "a refusal moves nothing"


def _on_devices(rows: int, seed: int = 0) -> Dict[str, jax.Array]:
    """A payload laid out [devices, ...] over the first `rows` devices, as Anakin's is."""
    mesh = Mesh(np.array(jax.devices()[:rows]), ("device",))
    values = jax.random.normal(jax.random.PRNGKey(seed), (rows, 3))
    return {"params": jax.device_put(values, NamedSharding(mesh, PartitionSpec("device")))}


def test_another_device_count_is_refused_in_words(tmp_path: Path) -> None:
    directory = tmp_path / "checkpoints"
    with Checkpointer(directory, _config(), num_devices=2) as checkpointer:
        checkpointer.save(0, _on_devices(2), metric=1.0, steps_done=10)
        assert checkpointer.restore(_on_devices(2, seed=1)).info.num_devices == 2

    with Checkpointer(directory, _config(), num_devices=1) as checkpointer:
        with pytest.raises(CheckpointError) as refusal:
            checkpointer.restore(_on_devices(1))
    assert str(refusal.value) == (
        f"Checkpoint {directory / '0'} was written on 2 devices and this run has 1; resume with "
        "the same number of devices (XLA_FLAGS=--xla_force_host_platform_device_count=2 on a "
        "CPU)."
    )


class _Payload(NamedTuple):
    """The part of the runner's checkpoint payload `open_checkpoints` looks into."""

    learner_state: Dict[str, jax.Array]  # [devices, ...]


def test_open_checkpoints_records_the_runs_device_count(tmp_path: Path) -> None:
    from stoix.runners.session import open_checkpoints
    from stoix.runners.settings import CheckpointSettings, RunSettings

    cfg = RunSettings(
        seed=0,
        evaluation_greedy=False,
        eval_max_steps=None,
        absolute_metric=False,
        absolute_metric_episode_multiplier=1,
        report_compiles=False,
        checkpointing=CheckpointSettings(
            save_model=True, load_model=False, load_path=None, keep_latest=1, keep_best=1
        ),
    )
    run_dir = tmp_path / "run"
    checkpointer, _, start = open_checkpoints(
        cfg, _config(), run_dir, False, _Payload(_on_devices(2)), 5
    )
    assert start == 0
    checkpointer.save(0, _Payload(_on_devices(2)), metric=1.0, steps_done=10)
    checkpointer.close()
    metadata = json.loads((run_dir / "checkpoints" / "0" / "meta" / "metadata").read_text())
    assert metadata["num_devices"] == 2

    with pytest.raises(ConfigError, match="written on 2 devices and this run has 1; resume"):
        open_checkpoints(cfg, _config(), run_dir, True, _Payload(_on_devices(1)), 5)


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


def test_interrupted_save_leftovers_are_removed_on_open(tmp_path: Path) -> None:
    directory = tmp_path / "checkpoints"
    with Checkpointer(directory, _config()) as checkpointer:
        checkpointer.save(0, _state(), metric=1.0, steps_done=10)
    # What a kill -9 in the middle of saving period 1 leaves behind.
    partial = directory / "1.orbax-checkpoint-tmp-1234567890"
    (partial / "state").mkdir(parents=True)
    (partial / "state" / "_METADATA").write_text("{")

    with Checkpointer(directory, _config()) as checkpointer:
        assert not partial.exists(), "opening the checkpoints removes half-written saves"
        assert checkpointer.latest_period() == 0
        restored, info, skipped = checkpointer.restore(_zeros_like(_state()))
        assert (info.period, skipped) == (0, ())
        checkpointer.save(1, _state(1), metric=2.0, steps_done=20)
        assert checkpointer.latest_period() == 1
    _assert_same(restored, _state(0))
    # Period 1 is both the latest and the best: retention dropped period 0.
    assert sorted(p.name for p in directory.iterdir()) == ["1"]


def test_find_resumable_run(tmp_path: Path) -> None:
    runs_root = tmp_path / "runs"
    assert find_resumable_run(runs_root, _config()) is None

    for run_id, config in [
        ("older", _config()),
        ("newer", _config(base_exp_path="other")),
        ("other_config", _config(epochs=7)),
        ("incomplete", _config()),
    ]:
        with Checkpointer(runs_root / run_id / "checkpoints", config) as checkpointer:
            checkpointer.save(0, _state(), metric=1.0, steps_done=10)
    (runs_root / "no_checkpoints").mkdir()
    # The newest run of this config only got as far as orbax's commit: nothing to resume.
    (runs_root / "incomplete" / "checkpoints" / "0" / "integrity.json").unlink()
    # Set times explicitly: file-system timestamps can tie within one test.
    for age, run_id in enumerate(["incomplete", "other_config", "newer", "older"]):
        stamp = 1_700_000_000 - 100 * age
        for path in [runs_root / run_id, *(runs_root / run_id / "checkpoints").iterdir()]:
            os.utime(path, (stamp, stamp))

    assert find_resumable_run(runs_root, _config()) == runs_root / "newer"
    assert find_resumable_run(runs_root, _config(epochs=7)) == runs_root / "other_config"
    assert find_resumable_run(runs_root, _config(epochs=9)) is None


def test_a_run_resumes_past_a_damaged_newest_checkpoint_and_keeps_saving(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from stoix.systems.ppo.anakin import ff_ppo
    from stoix.utils.entry import compose_config
    from tests.helpers import TINY

    overrides = [
        *TINY,
        "arch.total_timesteps=2048",
        "logger.use_tb=False",
        f"logger.base_exp_path={tmp_path}",
        "logger.checkpointing.save_model=True",
        "logger.checkpointing.keep_latest=2",
    ]
    ff_ppo.run_experiment(compose_config("ff_ppo", overrides))
    (directory,) = tmp_path.rglob("checkpoints")
    assert sorted(p.name for p in directory.iterdir()) == ["0", "1"]
    # The newest checkpoint lost its record (a kill before it was written) and then a bit.
    (directory / "1" / "integrity.json").unlink()
    _flip_a_bit(_array_files(directory / "1")[0])
    capsys.readouterr()

    ff_ppo.run_experiment(
        compose_config("ff_ppo", [*overrides, "logger.checkpointing.load_model=True"])
    )
    out, err = capsys.readouterr()
    assert f"Resuming {directory.parent} after evaluation 1/2 (from checkpoint 0)" in out
    assert (
        "Warning: skipped checkpoint 1, which is incomplete: it has no integrity.json (its save "
        f"was interrupted); moved it to {directory / '_rejected' / '1'}"
    ) in err
    # The resumed run saved period 1 again, completely, next to the set-aside copy.
    assert sorted(p.name for p in directory.iterdir()) == ["0", "1", "_rejected"]
    step_dir = directory / "1"
    integrity.verify_files(step_dir, integrity.read_record(step_dir))
