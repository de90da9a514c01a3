"""Tests for the run logger: marl-eval JSON, resume, TensorBoard, trackers and console output."""

import json
import os
import re
import time
from pathlib import Path

import numpy as np
import pytest
from tensorboard.backend.event_processing import event_file_loader
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import stoix.logger.console as console_module
import stoix.logger.facade as facade_module
from stoix.errors import ConfigError
from stoix.logger import RunIdentity, StoixLogger

IDENTITY = RunIdentity(system_name="ff_ppo", env_name="gymnax", task_name="cartpole", seeds=(0, 1))
ANSI_ESCAPE = "\x1b["
STEPS_PER_PERIOD = 1_000


def _train(period: int, seeds=(0, 1)) -> list:
    return [
        {"episode_return": 10.0 * period + seed, "episode_length": 50.0, "actor_loss": 0.5}
        for seed in seeds
    ]


def _evaluation(period: int, seeds=(0, 1), offset: float = 0.0) -> list:
    # Distinct, exactly representable values per period and seed, so equality checks are exact.
    return [
        {
            "episode_return": np.array([1.0, 2.0, 3.0]) * (period + 1) + seed + offset,
            "episode_length": np.array([10.0, 20.0, 30.0]) + seed,
        }
        for seed in seeds
    ]


def _timing() -> dict:
    return {"steps_per_second": 152_345.0, "period_seconds": 2.0, "eval_seconds": 0.25}


def _make_logger(run_dir: Path, **overrides) -> StoixLogger:
    options = dict(
        num_periods=4,
        total_steps=4 * STEPS_PER_PERIOD,
        use_console=False,
        use_json=True,
        use_tb=False,
        colour=False,
    )
    options.update(overrides)
    return StoixLogger(run_dir, IDENTITY, **options)


def _log_periods(logger: StoixLogger, periods, offset: float = 0.0) -> None:
    for period in periods:
        logger.log_period(
            period,
            (period + 1) * STEPS_PER_PERIOD,
            _train(period),
            _evaluation(period, offset=offset),
            _timing(),
        )


def _runs(run_dir: Path) -> dict:
    document = json.loads((run_dir / "metrics.json").read_text())
    return document["gymnax"]["cartpole"]["ff_ppo"]


# ---------------------------------------------------------------------------------------------
# marl-eval JSON
# ---------------------------------------------------------------------------------------------


def test_json_has_marl_eval_layout_and_logged_values(tmp_path: Path) -> None:
    logger = _make_logger(tmp_path)
    _log_periods(logger, range(3))

    document = json.loads((tmp_path / "metrics.json").read_text())
    assert list(document) == ["gymnax"]
    assert list(document["gymnax"]) == ["cartpole"]
    assert list(document["gymnax"]["cartpole"]) == ["ff_ppo"]
    runs = document["gymnax"]["cartpole"]["ff_ppo"]
    assert sorted(runs) == ["seed_0", "seed_1"]
    for seed_index, seed in enumerate(IDENTITY.seeds):
        run = runs[f"seed_{seed}"]
        assert list(run) == ["step_0", "step_1", "step_2"]
        for period in range(3):
            expected = _evaluation(period)[seed_index]
            assert run[f"step_{period}"] == {
                "step_count": (period + 1) * STEPS_PER_PERIOD,
                "episode_return": expected["episode_return"].tolist(),
                "episode_length": expected["episode_length"].tolist(),
            }
            assert isinstance(run[f"step_{period}"]["step_count"], int)

    absolute = [
        {"episode_return": np.arange(30.0) + seed, "episode_length": np.ones(30)} for seed in (0, 1)
    ]
    logger.log_absolute(absolute)
    logger.close()

    runs = _runs(tmp_path)
    for seed_index, seed in enumerate(IDENTITY.seeds):
        run = runs[f"seed_{seed}"]
        assert list(run)[-1] == "absolute_metrics"
        assert run["absolute_metrics"] == {
            "episode_return": absolute[seed_index]["episode_return"].tolist(),
            "episode_length": absolute[seed_index]["episode_length"].tolist(),
        }


def test_json_writes_non_finite_values_as_null(tmp_path: Path) -> None:
    logger = _make_logger(tmp_path)
    evaluation = _evaluation(0)
    evaluation[0]["episode_return"] = np.array([1.0, np.nan, np.inf])
    logger.log_period(0, STEPS_PER_PERIOD, _train(0), evaluation, _timing())
    logger.close()

    text = (tmp_path / "metrics.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert _runs(tmp_path)["seed_0"]["step_0"]["episode_return"] == [1.0, None, None]


def test_json_is_replaced_whole_after_every_period(tmp_path: Path) -> None:
    logger = _make_logger(tmp_path)
    for period in range(2):
        _log_periods(logger, [period])
        assert f"step_{period}" in _runs(tmp_path)["seed_1"]
        # Only the finished file is left behind; the temporary one was renamed over it.
        assert sorted(path.name for path in tmp_path.iterdir()) == ["metrics.json"]
    logger.close()


# ---------------------------------------------------------------------------------------------
# Resume
# ---------------------------------------------------------------------------------------------


def test_resume_keeps_earlier_steps_and_overwrites_relogged_ones(tmp_path: Path) -> None:
    first = _make_logger(tmp_path)
    _log_periods(first, range(3))  # killed after period 2, checkpointed after period 1
    first.close()
    earlier = {seed: _runs(tmp_path)[seed] for seed in ("seed_0", "seed_1")}

    resumed = _make_logger(tmp_path, resume=True)
    _log_periods(resumed, [2, 3], offset=100.0)
    resumed.close()

    runs = _runs(tmp_path)
    for seed_index, run_name in enumerate(("seed_0", "seed_1")):
        run = runs[run_name]
        assert list(run) == ["step_0", "step_1", "step_2", "step_3"]
        assert run["step_0"] == earlier[run_name]["step_0"]
        assert run["step_1"] == earlier[run_name]["step_1"]
        relogged = _evaluation(2, offset=100.0)[seed_index]["episode_return"].tolist()
        assert run["step_2"]["episode_return"] == relogged
        assert run["step_3"]["step_count"] == 4 * STEPS_PER_PERIOD


def test_resume_drops_entries_from_the_killed_runs_future(tmp_path: Path) -> None:
    first = _make_logger(tmp_path)
    _log_periods(first, range(4))
    first.log_absolute(_evaluation(0))
    first.close()

    resumed = _make_logger(tmp_path, resume=True)
    _log_periods(resumed, [2])
    resumed.close()

    assert list(_runs(tmp_path)["seed_0"]) == ["step_0", "step_1", "step_2"]


def test_resume_without_an_existing_file_starts_fresh(tmp_path: Path) -> None:
    logger = _make_logger(tmp_path / "run", resume=True)
    _log_periods(logger, [1])
    logger.close()
    assert list(_runs(tmp_path / "run")["seed_0"]) == ["step_1"]


@pytest.mark.parametrize("content", ['{"gymnax": {"cartpole": ', '["not", "an", "object"]'])
def test_resume_refuses_a_corrupt_file_naming_it(tmp_path: Path, content: str) -> None:
    path = tmp_path / "metrics.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=re.escape(str(path))):
        _make_logger(tmp_path, resume=True)


# ---------------------------------------------------------------------------------------------
# TensorBoard
# ---------------------------------------------------------------------------------------------


def _scalars(logdir: Path, tag: str) -> list:
    accumulator = EventAccumulator(str(logdir))
    accumulator.Reload()
    return [(event.step, event.value) for event in accumulator.Scalars(tag)]


def test_tensorboard_writes_one_run_per_seed_with_step_axis(tmp_path: Path) -> None:
    logger = _make_logger(tmp_path, use_json=False, use_tb=True)
    _log_periods(logger, range(2))
    logger.log_absolute(_evaluation(5))
    logger.close()

    tb_root = tmp_path / "tensorboard"
    assert sorted(path.name for path in tb_root.iterdir()) == ["seed_0", "seed_1"]
    seed_1 = tb_root / "seed_1"
    steps = [STEPS_PER_PERIOD, 2 * STEPS_PER_PERIOD]

    eval_means = [float(np.mean(_evaluation(p)[1]["episode_return"])) for p in range(2)]
    assert _scalars(seed_1, "eval/episode_return_mean") == [
        (step, pytest.approx(mean)) for step, mean in zip(steps, eval_means, strict=True)
    ]
    return_std = float(np.std(_evaluation(0)[1]["episode_return"]))
    assert _scalars(seed_1, "eval/episode_return_std")[0] == (steps[0], pytest.approx(return_std))
    assert _scalars(seed_1, "train/episode_return") == [(steps[0], 1.0), (steps[1], 11.0)]
    assert _scalars(seed_1, "timing/steps_per_second")[0] == (steps[0], 152_345.0)
    absolute_mean = float(np.mean(_evaluation(5)[1]["episode_return"]))
    assert _scalars(seed_1, "absolute/episode_return_mean") == [
        (steps[1], pytest.approx(absolute_mean))
    ]


# ---------------------------------------------------------------------------------------------
# Console
# ---------------------------------------------------------------------------------------------


def _force_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    # Under capsys stdout is not a TTY, so rich would never colour; make it believe it is one so
    # that the absence of escape codes is down to colour=False.
    monkeypatch.setenv("FORCE_COLOR", "1")
    monkeypatch.setenv("TERM", "xterm-256color")
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.delenv("TTY_COMPATIBLE", raising=False)


def test_console_shows_progress_sps_and_no_ansi_without_colour(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    _force_terminal(monkeypatch)
    logger = _make_logger(
        tmp_path,
        num_periods=20,
        total_steps=20 * STEPS_PER_PERIOD,
        use_console=True,
        use_json=False,
    )
    _log_periods(logger, [4])
    logger.log_absolute(_evaluation(4))
    logger.close()

    out = capsys.readouterr().out
    assert ANSI_ESCAPE not in out
    train_line = next(line for line in out.splitlines() if "TRAIN" in line)
    eval_line = next(line for line in out.splitlines() if "EVAL" in line)
    assert train_line.startswith("[ 5/20]  25%  ETA")
    assert re.search(r"SPS\s+152\.3k", train_line)
    assert "actor_loss 0.5" in train_line
    # Two seeds: the eval return carries its spread over seeds (seed means 10 and 11).
    assert re.search(r"return\s+10\.5 ± 0\.5\b", eval_line)
    absolute_line = next(line for line in out.splitlines() if "ABSOLUTE" in line)
    # Columns line up between the TRAIN, EVAL and ABSOLUTE lines.
    for column in ("step", "return", "length"):
        assert train_line.index(column) == eval_line.index(column) == absolute_line.index(column)


def test_console_colours_only_when_asked(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    _force_terminal(monkeypatch)
    logger = _make_logger(tmp_path, use_console=True, use_json=False, colour=True)
    _log_periods(logger, [0])
    logger.close()
    assert ANSI_ESCAPE in capsys.readouterr().out


def test_console_eta_uses_the_measured_period_time(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    times = iter([0.0, 30.0, 40.0, 50.0])  # created, then the end of periods 0, 1, 2
    monkeypatch.setattr(facade_module, "_now", lambda: next(times))
    logger = _make_logger(tmp_path, num_periods=10, use_console=True, use_json=False)
    _log_periods(logger, range(3))
    logger.close()

    markers = re.findall(r"\[\s*(\d+)/10\]\s+(\d+)%\s+ETA\s+(\S+)", capsys.readouterr().out)
    # The first period is timed from creation; later ones from the gaps between periods.
    assert markers == [("1", "10", "0:04:30"), ("2", "20", "0:01:20"), ("3", "30", "0:01:10")]


@pytest.mark.parametrize(
    ("value", "expected"),
    [(152_345.0, "152.3k"), (999.0, "999.0"), (999_960.0, "1.0M"), (2.5e9, "2.5B")],
)
def test_counts_are_formatted_compactly(value: float, expected: str) -> None:
    assert console_module._format_count(value) == expected


# ---------------------------------------------------------------------------------------------
# Sinks off, validation
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("use_console", [False, True])
def test_no_file_sinks_write_nothing(tmp_path: Path, use_console: bool) -> None:
    run_dir = tmp_path / "run"
    logger = _make_logger(run_dir, use_console=use_console, use_json=False, use_tb=False)
    _log_periods(logger, range(2))
    logger.log_absolute(_evaluation(0))
    logger.close()
    assert not run_dir.exists()


def test_creating_a_logger_writes_nothing_yet(tmp_path: Path) -> None:
    _make_logger(tmp_path / "run", use_tb=True).close()
    assert not (tmp_path / "run").exists()


def test_rejects_a_wrong_number_of_seeds(tmp_path: Path) -> None:
    logger = _make_logger(tmp_path)
    with pytest.raises(ValueError, match="one per seed"):
        logger.log_period(0, 1, _train(0, seeds=(0,)), _evaluation(0), _timing())
    with pytest.raises(ValueError, match="one per seed"):
        logger.log_absolute(_evaluation(0, seeds=(0, 1, 2)))


def test_rejects_a_period_out_of_range(tmp_path: Path) -> None:
    logger = _make_logger(tmp_path)
    with pytest.raises(ValueError, match="period"):
        logger.log_period(4, 1, _train(0), _evaluation(0), _timing())


def test_logging_after_close_is_an_error(tmp_path: Path) -> None:
    logger = _make_logger(tmp_path)
    logger.close()
    logger.close()  # closing twice is harmless
    with pytest.raises(RuntimeError, match="closed"):
        _log_periods(logger, [0])


def test_identity_validates_and_normalises_seeds() -> None:
    seeds = [np.int64(3), 4]  # as config and numpy hand them over
    identity = RunIdentity("ff_ppo", "gymnax", "cartpole", seeds=seeds)  # type: ignore[arg-type]
    assert identity.seeds == (3, 4)
    assert identity.run_names == ("seed_3", "seed_4")
    with pytest.raises(ValueError, match="distinct"):
        RunIdentity("ff_ppo", "gymnax", "cartpole", seeds=(1, 1))
    with pytest.raises(ValueError, match="at least one"):
        RunIdentity("ff_ppo", "gymnax", "cartpole", seeds=())


# ---------------------------------------------------------------------------------------------
# TensorBoard, read back by TensorBoard's own raw event loader
# ---------------------------------------------------------------------------------------------


def _tensorboard_points(logdir: Path) -> dict:
    """(tag, step) -> value over every event file in a run folder, as TensorBoard loads them."""
    points = {}
    for path in sorted(logdir.glob("events.out.tfevents.*")):
        for event in event_file_loader.LegacyEventFileLoader(str(path)).Load():
            for value in event.summary.value:
                points[(value.tag, event.step)] = value.simple_value
    return points


def test_tensorboard_files_load_with_tensorboards_reader(tmp_path: Path) -> None:
    logger = _make_logger(tmp_path, use_json=False, use_tb=True)
    _log_periods(logger, range(2))
    logger.log_absolute(_evaluation(5))
    logger.close()

    steps = (STEPS_PER_PERIOD, 2 * STEPS_PER_PERIOD)
    period_tags = {
        "train/episode_return",
        "train/episode_length",
        "train/actor_loss",
        "eval/episode_return_mean",
        "eval/episode_return_std",
        "eval/episode_length_mean",
        "timing/steps_per_second",
        "timing/period_seconds",
        "timing/eval_seconds",
    }
    absolute_tags = {"absolute/episode_return_mean", "absolute/episode_return_std"}
    absolute_tags.add("absolute/episode_length_mean")
    for seed_index, seed in enumerate(IDENTITY.seeds):
        points = _tensorboard_points(tmp_path / "tensorboard" / f"seed_{seed}")
        expected = {(tag, step) for tag in period_tags for step in steps}
        expected |= {(tag, steps[-1]) for tag in absolute_tags}
        assert set(points) == expected
        returns = _evaluation(1)[seed_index]["episode_return"]
        assert points[("eval/episode_return_mean", steps[1])] == pytest.approx(np.mean(returns))


# ---------------------------------------------------------------------------------------------
# Neptune and Weights & Biases, offline
# ---------------------------------------------------------------------------------------------

# WandB and Neptune are slow to import, and a test of each covers a whole run's life.
TRACKED_PERIODS = range(2)


def _log_tracked_run(logger: StoixLogger) -> None:
    _log_periods(logger, TRACKED_PERIODS)
    logger.log_absolute(_evaluation(5))
    logger.close()


def _wandb_records(path: Path, timeout: float = 10.0) -> list:
    """Reads a finished run's ``.wandb`` transaction log, up to its closing ``exit`` record.

    wandb-core flushes the file after ``run.finish()`` has returned, so a busy machine can show
    it unfinished for a moment; the reader waits for the ``exit`` record rather than guess.
    """
    deadline = time.monotonic() + timeout
    while True:
        records = _parse_wandb_log(path.read_bytes())
        if records and records[-1].WhichOneof("record_type") == "exit":
            return records
        assert time.monotonic() < deadline, f"{path} has no exit record"
        time.sleep(0.1)


def _parse_wandb_log(data: bytes) -> list:
    """Parses ``.wandb`` bytes into wandb's own protobuf records.

    wandb 0.31 ships no Python reader (wandb-core writes the file), so the framing is read
    here: a 7-byte ``:W&B`` header, then LevelDB-log chunks in 32 KiB blocks, each with a
    7-byte header (CRC, little-endian length, type: 1 full, 2 first, 3 middle, 4 last).
    """
    from wandb.proto import wandb_internal_pb2

    block, header = 32 * 1024, 7
    if len(data) < header:
        return []  # not written yet
    assert data[:4] == b":W&B"
    records, pending, offset = [], b"", header
    while offset + header <= len(data):
        if block - offset % block < header:
            offset += block - offset % block  # the block's zero-filled tail
            continue
        length = int.from_bytes(data[offset + 4 : offset + 6], "little")
        kind = data[offset + 6]
        if kind == 0:
            break
        pending += data[offset + header : offset + header + length]
        offset += header + length
        if offset > len(data):
            break  # a chunk still being written
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def _wandb_history(path: Path) -> list:
    history = []
    for record in _wandb_records(path):
        if record.WhichOneof("record_type") == "history":
            items = {}
            for item in record.history.item:
                key = item.key or "/".join(item.nested_key)
                items[key] = json.loads(item.value_json)
            history.append(items)
    return history


def test_wandb_offline_writes_one_run_per_seed_under_the_run_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_DIR", raising=False)
    monkeypatch.chdir(tmp_path)  # anything wandb wrote outside the run dir would show up here
    run_dir = tmp_path / "run"
    settings = {"use": True, "project": "stoix-test", "mode": "offline", "tags": ["ci"]}
    logger = _make_logger(run_dir, wandb=settings, config={"system": {"lr": 0.1}})
    _log_tracked_run(logger)

    assert sorted(path.name for path in tmp_path.iterdir()) == ["run"]
    run_files = sorted((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(run_files) == len(IDENTITY.seeds)
    by_name = {}
    for path in run_files:
        records = _wandb_records(path)
        run = next(r.run for r in records if r.WhichOneof("record_type") == "run")
        assert run.project == "stoix-test" and run.run_group == "run" and "ci" in run.tags
        config = {item.key: json.loads(item.value_json) for item in run.config.update}
        assert config["system"] == {"lr": 0.1}
        by_name[run.display_name] = (config["run"]["seed"], _wandb_history(path))
    assert sorted(by_name) == ["ff_ppo_gymnax_cartpole_seed_0", "ff_ppo_gymnax_cartpole_seed_1"]

    for seed_index, seed in enumerate(IDENTITY.seeds):
        logged_seed, history = by_name[f"ff_ppo_gymnax_cartpole_seed_{seed}"]
        assert logged_seed == seed
        periods, absolute = history[:-1], history[-1]
        assert [row["env_step"] for row in periods] == [1000, 2000]
        returns = _evaluation(1)[seed_index]["episode_return"]
        assert periods[1]["eval/episode_return_mean"] == pytest.approx(np.mean(returns))
        assert periods[1]["eval/episode_return_min"] == pytest.approx(np.min(returns))
        assert periods[1]["eval/episode_return_max"] == pytest.approx(np.max(returns))
        assert periods[1]["train/actor_loss"] == 0.5
        assert absolute["env_step"] == 2000
        absolute_returns = _evaluation(5)[seed_index]["episode_return"]
        assert absolute["absolute/episode_return_mean"] == pytest.approx(np.mean(absolute_returns))


def test_wandb_resume_opens_new_tagged_runs_that_continue_the_step_axis(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WANDB_SILENT", "true")
    settings = {"use": True, "mode": "offline"}
    first = _make_logger(tmp_path, wandb=settings)
    _log_periods(first, range(2))
    first.close()
    earlier = set((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))

    resumed = _make_logger(tmp_path, wandb=settings, resume=True)
    _log_periods(resumed, [1])
    resumed.close()

    # Offline runs cannot be reopened, so each seed's resumed run is a new one beside the old.
    new = set((tmp_path / "wandb").glob("offline-run-*/run-*.wandb")) - earlier
    assert len(earlier) == len(new) == len(IDENTITY.seeds)
    for path in new:
        run = next(r.run for r in _wandb_records(path) if r.WhichOneof("record_type") == "run")
        assert "resumed" in run.tags
        assert [row["env_step"] for row in _wandb_history(path)] == [2 * STEPS_PER_PERIOD]
    assert list(_runs(tmp_path)["seed_0"]) == ["step_0", "step_1"]


def _neptune_operations(run_dir: Path) -> dict:
    """Run name -> the operations Neptune queued offline, from its JSON-lines data files."""
    runs = {}
    for container in (run_dir / "neptune" / "offline").iterdir():
        operations = [
            json.loads(line)["obj"]
            for path in sorted(container.glob("data-*.log"))
            for line in path.read_text().splitlines()
        ]
        name = next(op["value"] for op in operations if op["path"] == ["sys", "name"])
        runs[name] = operations
    return runs


def test_neptune_offline_writes_one_run_per_seed_under_the_run_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NEPTUNE_MODE", "offline")
    monkeypatch.delenv("NEPTUNE_DATA_DIRECTORY", raising=False)
    monkeypatch.chdir(tmp_path)  # Neptune's default data folder would be ./.neptune
    run_dir = tmp_path / "run"
    settings = {"use": True, "project": None, "mode": "offline", "tags": ["ci"]}
    logger = _make_logger(run_dir, neptune=settings, config={"system": {"lr": 0.1}})
    _log_tracked_run(logger)

    assert sorted(path.name for path in tmp_path.iterdir()) == ["run"]
    assert "NEPTUNE_DATA_DIRECTORY" not in os.environ
    runs = _neptune_operations(run_dir)
    assert sorted(runs) == ["ff_ppo_gymnax_cartpole_seed_0", "ff_ppo_gymnax_cartpole_seed_1"]
    for seed_index, seed in enumerate(IDENTITY.seeds):
        operations = runs[f"ff_ppo_gymnax_cartpole_seed_{seed}"]
        values = {}
        for op in operations:
            path = "/".join(op["path"])
            if op["type"] == "LogFloats":
                values.setdefault(path, []).extend((v["step"], v["value"]) for v in op["values"])
            elif op["type"] in ("AssignFloat", "AssignInt", "AssignBool"):
                values[path] = op["value"]
        assert values["parameters/system/lr"] == 0.1
        assert values["run/seed"] == seed
        returns = [_evaluation(p)[seed_index]["episode_return"] for p in TRACKED_PERIODS]
        assert values["eval/episode_return_mean"] == [
            (1000.0, pytest.approx(np.mean(returns[0]))),
            (2000.0, pytest.approx(np.mean(returns[1]))),
        ]
        assert [step for step, _ in values["eval/episode_return_std"]] == [1000.0, 2000.0]
        assert values["train/actor_loss"] == [(1000.0, 0.5), (2000.0, 0.5)]
        absolute_returns = _evaluation(5)[seed_index]["episode_return"]
        assert values["absolute/episode_return_max"] == pytest.approx(np.max(absolute_returns))


@pytest.mark.parametrize(
    ("tracker", "settings", "key"),
    [
        ("wandb", {"use": True, "mode": "sometimes"}, "logger.wandb.mode"),
        ("wandb", {"use": True, "project": None}, "logger.wandb.project"),
        ("wandb", {"use": True, "colour": "red"}, "logger.wandb.colour"),
        ("neptune", {"use": True, "mode": "read-only"}, "logger.neptune.mode"),
        ("neptune", {"use": True, "mode": "async", "project": None}, "logger.neptune.project"),
    ],
)
def test_tracker_misconfiguration_fails_before_anything_is_written(
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    tracker: str,
    settings: dict,
    key: str,
) -> None:
    monkeypatch.delenv("NEPTUNE_PROJECT", raising=False)
    run_dir = tmp_path / "run"
    with pytest.raises(ConfigError, match=re.escape(key)) as raised:
        _make_logger(run_dir, use_console=True, use_tb=True, **{tracker: settings})
    assert "\n" not in str(raised.value)
    assert not run_dir.exists()
    assert capsys.readouterr().out == ""


def test_trackers_stay_off_unless_used(tmp_path: Path) -> None:
    off = {"use": False, "project": None, "mode": "offline"}
    _make_logger(tmp_path / "run", neptune=off, wandb=off).close()
    assert not (tmp_path / "run").exists()
