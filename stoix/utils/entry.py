"""Command-line entry for system files: Hydra config in, one-line errors out."""

import functools
import sys
from pathlib import Path
from typing import Callable, Sequence

import hydra
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from stoix.utils.config import ConfigError
from stoix.utils.runner import TrainingDiverged
from stoix.utils.sebulba import ThreadFailure

CONFIG_ROOT = Path(__file__).resolve().parent.parent / "configs"
# Entry configs live in configs/default/<arch>/; they find the groups through hydra.searchpath.
DEFAULT_DIR = "default/anakin"


def reject_added_keys(overrides: Sequence[str]) -> None:
    """Refuses `+a.b=value` overrides: they add a key no system reads, so the run would silently
    ignore what the user asked for. Adding a config group (`+group/x=...`) stays allowed."""
    for override in overrides:
        if override.startswith("+") and not override.startswith("++"):
            key = override.lstrip("+").split("=", 1)[0]
            if "/" not in key and not key.startswith("hydra"):
                raise ConfigError(f"'{key}' is not a known config key (added with '+')")


def hydra_main(
    config_name: str, arch_dir: str = DEFAULT_DIR
) -> Callable[[Callable[[DictConfig], float]], Callable[[], None]]:
    """Wraps a system's `run_experiment` as a Hydra command-line entry point.

    A bad config or checkpoint prints one line `stoix: error: …` and exits with status 2.
    """

    def decorate(run: Callable[[DictConfig], float]) -> Callable[[], None]:
        @hydra.main(
            config_path=str(CONFIG_ROOT / arch_dir), config_name=config_name, version_base="1.3"
        )
        @functools.wraps(run)
        def main(cfg: DictConfig) -> float:
            try:
                reject_added_keys(HydraConfig.get().overrides.task)
                return run(cfg)
            except ConfigError as err:
                print(f"stoix: error: {err}", file=sys.stderr)
                sys.exit(2)
            except TrainingDiverged as err:
                print(f"stoix: training diverged: {err}", file=sys.stderr)
                sys.exit(1)
            except KeyboardInterrupt:
                # The runners' `finally` blocks have stopped threads and closed env pools.
                print("stoix: interrupted", file=sys.stderr)
                sys.exit(130)
            except ThreadFailure as err:
                # The failing thread's own traceback is in the message; the main thread's
                # (a queue wait) would only hide it.
                print(f"stoix: {err}", file=sys.stderr)
                sys.exit(1)

        return main

    return decorate


def compose_config(
    config_name: str, overrides: Sequence[str] = (), arch_dir: str = DEFAULT_DIR
) -> DictConfig:
    """The config a command line would produce, for tests, sweeps and notebooks."""
    with initialize_config_dir(config_dir=str(CONFIG_ROOT / arch_dir), version_base="1.3"):
        reject_added_keys(overrides)
        return compose(config_name=config_name, overrides=list(overrides))
