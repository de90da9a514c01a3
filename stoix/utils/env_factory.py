"""Builds train and evaluation environments from the `env` config group."""

from typing import Any, Callable, Dict

from omegaconf import DictConfig, OmegaConf

from stoix.utils.config import ConfigError
from stoix.wrappers.episode import EpisodeEnv, SuiteAdapter


def _gymnax(scenario: str, **kwargs: Any) -> SuiteAdapter:
    from stoix.wrappers.gymnax import GymnaxAdapter

    return GymnaxAdapter(scenario, **kwargs)


def _jumanji(scenario: str, **kwargs: Any) -> SuiteAdapter:
    from stoix.wrappers.jumanji import JumanjiAdapter

    return JumanjiAdapter(scenario, **kwargs)


def _brax(scenario: str, **kwargs: Any) -> SuiteAdapter:
    from stoix.wrappers.brax import BraxAdapter

    return BraxAdapter(scenario, **kwargs)


# Imports are deferred so a run only pays for the suite it uses.
SUITES: Dict[str, Callable[..., SuiteAdapter]] = {
    "gymnax": _gymnax,
    "jumanji": _jumanji,
    "brax": _brax,
}


def make_env(env_cfg: DictConfig) -> EpisodeEnv:
    """One Stoix environment (unbatched; the runner vmaps it) from the `env` config."""
    suite = str(env_cfg.suite)
    if suite not in SUITES:
        raise ConfigError(
            f"env.suite='{suite}' is not a known suite; choose one of {sorted(SUITES)}"
        )
    raw_kwargs = env_cfg.get("kwargs")
    kwargs = OmegaConf.to_container(raw_kwargs, resolve=True) if raw_kwargs else {}
    assert isinstance(kwargs, dict)
    try:
        adapter = SUITES[suite](str(env_cfg.scenario), **kwargs)
    except ImportError as err:
        raise ConfigError(
            f"env.suite='{suite}' needs a package that is not installed: {err}"
        ) from err
    except (KeyError, ValueError, NotImplementedError, AttributeError, TypeError) as err:
        raise ConfigError(
            f"env.scenario='{env_cfg.scenario}' could not be made by the {suite} suite: "
            f"{str(err).splitlines()[0] if str(err) else type(err).__name__}"
        ) from err
    cap = env_cfg.get("max_episode_steps")
    if cap is not None and int(cap) <= 0:
        raise ConfigError(f"env.max_episode_steps={cap} must be a positive integer or null")
    return EpisodeEnv(adapter, max_episode_steps=int(cap) if cap is not None else None)
