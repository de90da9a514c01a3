"""Builds train and evaluation environments from the `env` config group."""

from typing import TYPE_CHECKING, Any, Callable, Dict

from omegaconf import DictConfig, OmegaConf

from stoix.errors import ConfigError
from stoix.wrappers.episode import EpisodeEnv, SuiteAdapter

if TYPE_CHECKING:
    from stoix.wrappers.envpool import EnvpoolEnv


def _gymnax(scenario: str, **kwargs: Any) -> SuiteAdapter:
    from stoix.wrappers.gymnax import GymnaxAdapter

    return GymnaxAdapter(scenario, **kwargs)


def _jumanji(scenario: str, **kwargs: Any) -> SuiteAdapter:
    from stoix.wrappers.jumanji import JumanjiAdapter

    return JumanjiAdapter(scenario, **kwargs)


def _brax(scenario: str, **kwargs: Any) -> SuiteAdapter:
    from stoix.wrappers.brax import BraxAdapter

    return BraxAdapter(scenario, **kwargs)


def _memory(scenario: str, **kwargs: Any) -> SuiteAdapter:
    from stoix.wrappers.memory import RecallAdapter

    if scenario != "recall":
        raise ValueError(f"the memory suite has only 'recall', not '{scenario}'")
    return RecallAdapter(**kwargs)


def _jaxmarl(scenario: str, **kwargs: Any) -> SuiteAdapter:
    from stoix.wrappers.jaxmarl import JaxMARLAdapter

    return JaxMARLAdapter(scenario, **kwargs)


def _craftax(scenario: str, **kwargs: Any) -> SuiteAdapter:
    from stoix.wrappers.craftax import CraftaxAdapter

    return CraftaxAdapter(scenario, **kwargs)


def _playground(scenario: str, **kwargs: Any) -> SuiteAdapter:
    from stoix.wrappers.playground import PlaygroundAdapter

    return PlaygroundAdapter(scenario, **kwargs)


def _envpool(scenario: str, max_episode_steps: int | None, **kwargs: Any) -> "EnvpoolEnv":
    from stoix.wrappers.envpool import EnvpoolEnv

    return EnvpoolEnv(scenario, max_episode_steps=max_episode_steps, **kwargs)


# Suites that auto-reset and keep episode statistics themselves: their factory makes the whole
# environment (given the episode cap), not an adapter for `EpisodeEnv`.
WHOLE_ENV_SUITES: Dict[str, Callable[..., "EnvpoolEnv"]] = {
    "envpool": _envpool,
}

# Imports are deferred so a run only pays for the suite it uses.
SUITES: Dict[str, Callable[..., SuiteAdapter]] = {
    "gymnax": _gymnax,
    "jumanji": _jumanji,
    "brax": _brax,
    "memory": _memory,
    "jaxmarl": _jaxmarl,
    "craftax": _craftax,
    "playground": _playground,
}


def make_env(env_cfg: DictConfig) -> EpisodeEnv:
    """One Stoix environment (unbatched; the runner vmaps it) from the `env` config."""
    suite = str(env_cfg.suite)
    if suite not in SUITES and suite not in WHOLE_ENV_SUITES:
        raise ConfigError(
            f"env.suite='{suite}' is not a known suite; choose one of "
            f"{sorted([*SUITES, *WHOLE_ENV_SUITES])}"
        )
    raw_kwargs = env_cfg.get("kwargs")
    kwargs = OmegaConf.to_container(raw_kwargs, resolve=True) if raw_kwargs else {}
    assert isinstance(kwargs, dict)
    cap = env_cfg.get("max_episode_steps")
    if cap is not None and int(cap) <= 0:
        raise ConfigError(f"env.max_episode_steps={cap} must be a positive integer or null")
    try:
        if suite in WHOLE_ENV_SUITES:
            # Duck-typed as an EpisodeEnv: same spec, reset, step and max_episode_steps.
            return WHOLE_ENV_SUITES[suite](  # type: ignore[return-value]
                str(env_cfg.scenario), int(cap) if cap is not None else None, **kwargs
            )
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
    return EpisodeEnv(adapter, max_episode_steps=int(cap) if cap is not None else None)
