"""Command-line entry for system files: Hydra config in, one-line errors out.

Before Hydra sees a command line, `preflight` checks it (options, overrides, group choices,
keys, values): Hydra's own reports of those mistakes run over several lines. What Hydra then
composes is checked against the schema again before the run starts, which also covers each
job of a multirun sweep.
"""

import argparse
import functools
import sys
from pathlib import Path
from typing import Any, Callable, NoReturn, Sequence

import hydra
from hydra import compose, initialize_config_dir
from hydra._internal.utils import get_args_parser
from omegaconf import DictConfig

from stoix.errors import ConfigError, ThreadFailure, TrainingDiverged
from stoix.utils.overrides import (
    GroupIndex,
    check_command_line,
    check_swept_values,
    compose_checked,
    concrete_texts,
    parse_overrides,
)
from stoix.utils.schema import schema_for, validate_config
from stoix.utils.stopping import RunStopped

CONFIG_ROOT = Path(__file__).resolve().parent.parent / "configs"
# Entry configs live in configs/default/<arch>/; they find the groups through hydra.searchpath.
DEFAULT_DIR = "default/anakin"


def _compose(config_name: str, arch_dir: str) -> Callable[[Sequence[str]], DictConfig]:
    def compose_with(overrides: Sequence[str]) -> DictConfig:
        with initialize_config_dir(config_dir=str(CONFIG_ROOT / arch_dir), version_base="1.3"):
            return compose(config_name=config_name, overrides=list(overrides))

    return compose_with


@functools.cache
def group_index(arch_dir: str, *extra: Path) -> GroupIndex:
    """The config groups an entry config in `arch_dir` can choose from (Hydra's search path:
    any --config-dir, the entry's own folder, then pkg://stoix.configs); scanned once."""
    return GroupIndex((*extra, CONFIG_ROOT / arch_dir, CONFIG_ROOT))


class _ArgumentError(Exception):
    pass


def _parse_arguments(argv: Sequence[str]) -> argparse.Namespace:
    """Hydra's own command-line options; a usage mistake is an error, not argparse's exit."""
    parser = get_args_parser()

    def error(message: str) -> NoReturn:
        raise _ArgumentError(message)

    parser.error = error  # type: ignore[method-assign]
    try:
        args = parser.parse_args(list(argv))
    except _ArgumentError as err:
        raise ConfigError(f"{err} (see --help)") from None
    modes = [args.run, args.multirun, args.cfg, args.info, args.shell_completion]
    if sum(bool(mode) for mode in modes) > 1:  # Hydra raises this one as a traceback
        raise ConfigError("use only one of --run, --multirun (-m), --cfg, --info")
    return args


def preflight(argv: Sequence[str], config_name: str, arch_dir: str = DEFAULT_DIR) -> None:
    """Checks a system file's command line before Hydra runs it.

    Group choices must name option files; keys must exist in the config those choices compose
    (with or without `+`); sweeps need -m; then the composed values, and each value a sweep
    lists (or an interval's ends), must fit the schema. Relations involving a swept value are
    checked in each job, when Hydra hands it its config.

    Raises:
        ConfigError: one line naming the override or key at fault.
    """
    args = _parse_arguments(argv)
    informational = args.help or args.hydra_help or args.shell_completion
    if informational or args.info or args.experimental_rerun or args.config_path:
        return  # nothing is composed (or the config comes from elsewhere): Hydra's business
    extra = (Path(args.config_dir).resolve(),) if args.config_dir else ()
    index = group_index(arch_dir, *extra)
    parsed = parse_overrides(args.overrides, index)
    check_command_line(parsed, index, multirun=args.multirun)
    if extra:
        return  # an extra config folder: only Hydra can compose with it
    name = args.config_name or config_name
    cfg = compose_checked(_compose(name, arch_dir), parsed, index, concrete_texts(parsed, index))
    if not args.cfg:  # --cfg only prints the config; its values need not run
        validate_config(cfg)
        check_swept_values(parsed, schema_for(str(cfg.arch.architecture_name)))


def _refuse(err: ConfigError) -> NoReturn:
    print(f"stoix: error: {err}", file=sys.stderr)
    sys.exit(2)


def hydra_main(
    config_name: str, arch_dir: str = DEFAULT_DIR
) -> Callable[[Callable[[DictConfig], float]], Callable[..., Any]]:
    """Wraps a system's `run_experiment` as a Hydra command-line entry point.

    A bad config or checkpoint prints one line `stoix: error: …` and exits with status 2.
    """

    def decorate(run: Callable[[DictConfig], float]) -> Callable[..., Any]:
        @hydra.main(
            config_path=str(CONFIG_ROOT / arch_dir), config_name=config_name, version_base="1.3"
        )
        @functools.wraps(run)
        def hydra_entry(cfg: DictConfig) -> float:
            try:
                validate_config(cfg)
                return run(cfg)
            except ConfigError as err:
                _refuse(err)
            except TrainingDiverged as err:
                print(f"stoix: training diverged: {err}", file=sys.stderr)
                sys.exit(1)
            except RunStopped as err:
                # SIGTERM/SIGUSR1/SIGUSR2: the period in flight was finished and saved.
                print(f"stoix: {err}", file=sys.stderr)
                sys.exit(err.exit_code)
            except KeyboardInterrupt:
                # The runners' `finally` blocks have stopped threads and closed env pools.
                print("stoix: interrupted", file=sys.stderr)
                sys.exit(130)
            except ThreadFailure as err:
                # The failing thread's own traceback is in the message; the main thread's
                # (a queue wait) would only hide it.
                print(f"stoix: {err}", file=sys.stderr)
                sys.exit(1)

        @functools.wraps(run)
        def main(cfg_passthrough: DictConfig | None = None) -> Any:
            if cfg_passthrough is None:  # a command line, not a config handed over in Python
                try:
                    preflight(sys.argv[1:], config_name, arch_dir)
                except ConfigError as err:
                    _refuse(err)
            return hydra_entry(cfg_passthrough)

        return main

    return decorate


def compose_config(
    config_name: str, overrides: Sequence[str] = (), arch_dir: str = DEFAULT_DIR
) -> DictConfig:
    """The config a command line would produce, for tests, sweeps and notebooks.

    Unknown keys and group options are refused as on the command line; the values are not
    checked here (`make_run_plan` does that), so a test can compose a bad config and watch
    the run refuse it.

    Raises:
        ConfigError: one line naming the override or key at fault.
    """
    index = group_index(arch_dir)
    parsed = parse_overrides(overrides, index)
    check_command_line(parsed, index, multirun=False)
    return compose_checked(_compose(config_name, arch_dir), parsed, index, list(overrides))
