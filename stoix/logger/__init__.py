"""Run logging: one facade fed once per evaluation period, fanning out to config-chosen sinks.

The training runner calls `StoixLogger.log_period` at the end of every evaluation period and
`StoixLogger.log_absolute` once after training. Each sink can be switched on or off:

* console: one TRAIN and one EVAL line per period with progress, ETA and steps per second,
  coloured by rich on a terminal and plain aligned text otherwise;
* JSON in the marl-eval format at ``run_dir / "metrics.json"``, rewritten atomically after
  every period;
* TensorBoard event files at ``run_dir / "tensorboard" / "seed_<seed>"``, one run per seed;
* Neptune, one run per seed, its local data under ``run_dir / "neptune"``;
* Weights & Biases, one run per seed, its local files under ``run_dir / "wandb"``.

Files go under ``run_dir`` only. The JSON and TensorBoard sinks write once they have something
to write, so a logger with only those off never touches the disk. Neptune and WandB runs are
created with the logger, so that a bad setting fails before training rather than after the
first period; their packages are imported only then.

Neptune and WandB plot every metric against environment steps. A resumed run opens new
Neptune and WandB runs (tagged ``resumed``) that continue the curves from the resumed step:
neither service can delete the killed run's points past the checkpoint, and offline runs
cannot be reopened at all.

Non-finite values (NaN, ±inf) are written to the JSON file as ``null``: strict JSON has no
NaN, and marl-eval expects every non-null entry to be a float. The console shows them as
``nan``/``inf``. TensorBoard skips them, leaving a gap in the curve: the usual cause is a
period in which no training episode finished, and a diverged loss already stops the runner.

Where each part lives:

* `stoix.logger.facade`: `StoixLogger`, which checks its input, keeps the ETA clock and fans
  each record out to the sinks;
* `stoix.logger.records`: `RunIdentity`, the period and absolute records, the sink protocol and
  the helpers more than one sink uses; sinks import it and never the facade;
* `stoix.logger.console`: the console sink;
* `stoix.logger.marl_eval`: the marl-eval JSON sink;
* `stoix.logger.tensorboard`: the TensorBoard sink;
* `stoix.logger.trackers`: the Neptune and WandB sinks, their settings and
  `check_tracker_settings`.
"""

from stoix.logger.facade import StoixLogger
from stoix.logger.marl_eval import METRICS_FILENAME
from stoix.logger.records import RunIdentity
from stoix.logger.tensorboard import TENSORBOARD_DIRNAME
from stoix.logger.trackers import (
    NEPTUNE_DIRNAME,
    WANDB_DIRNAME,
    NeptuneSettings,
    WandbSettings,
    check_tracker_settings,
)

__all__ = [
    "METRICS_FILENAME",
    "NEPTUNE_DIRNAME",
    "TENSORBOARD_DIRNAME",
    "WANDB_DIRNAME",
    "NeptuneSettings",
    "RunIdentity",
    "StoixLogger",
    "WandbSettings",
    "check_tracker_settings",
]
