"""Builds Sebulba's host vector envs from the `env` config: the registry of host adapters.

The adapters (`host_envpool.py`, `host_gymnasium.py`) build on `host_base.py`; they are imported
only when a run asks for their suite.
"""

from typing import Any, Callable, Dict

from omegaconf import DictConfig, OmegaConf

from stoix.errors import ConfigError
from stoix.wrappers.host import HostVectorEnv


def _envpool(
    scenario: str, num_envs: int, seed: int, max_episode_steps: int | None, **kwargs: Any
) -> HostVectorEnv:
    from stoix.wrappers.host_envpool import EnvpoolHostEnv

    return EnvpoolHostEnv(scenario, num_envs, seed, max_episode_steps, **kwargs)


def _gymnasium(
    scenario: str, num_envs: int, seed: int, max_episode_steps: int | None, **kwargs: Any
) -> HostVectorEnv:
    from stoix.wrappers.host_gymnasium import GymnasiumHostEnv

    return GymnasiumHostEnv(scenario, num_envs, seed, max_episode_steps, **kwargs)


# Imports are deferred so a run only pays for the suite it uses.
HOST_SUITES: Dict[str, Callable[..., HostVectorEnv]] = {
    "envpool": _envpool,
    "gymnasium": _gymnasium,
}


def _kwargs_without_seed(env_cfg: DictConfig) -> Dict[str, Any]:
    """`env.kwargs` without its `seed`, resolved key by key.

    The seed comes from the caller (each actor seeds its own envs). Dropping it before resolving
    lets an Anakin config such as envpool/pong.yaml (`seed: ${arch.seed}`) be used on its own.
    """
    raw = env_cfg.get("kwargs")
    if not raw:
        return {}
    kwargs: Dict[str, Any] = {}
    for key in raw:
        if key == "seed":
            continue
        value = raw[key]
        kwargs[str(key)] = (
            OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
        )
    return kwargs


def make_host_env(env_cfg: DictConfig, num_envs: int, seed: int) -> HostVectorEnv:
    """`num_envs` host environments of the `env` config, seeded from `seed`."""
    suite = str(env_cfg.suite)
    if suite not in HOST_SUITES:
        raise ConfigError(
            f"env.suite='{suite}' has no host (Sebulba) adapter; choose one of "
            f"{sorted(HOST_SUITES)}"
        )
    if num_envs <= 0:
        raise ValueError(f"num_envs={num_envs} must be positive")
    cap = env_cfg.get("max_episode_steps")
    if cap is not None and int(cap) <= 0:
        raise ConfigError(f"env.max_episode_steps={cap} must be a positive integer or null")
    kwargs = _kwargs_without_seed(env_cfg)
    scenario = str(env_cfg.scenario)
    try:
        return HOST_SUITES[suite](
            scenario, num_envs, int(seed), int(cap) if cap is not None else None, **kwargs
        )
    except ImportError as err:
        raise ConfigError(
            f"env.suite='{suite}' with env.scenario='{scenario}' needs a package that is not "
            f"installed: {str(err).splitlines()[0] if str(err) else type(err).__name__}"
        ) from err
    except (KeyError, ValueError, NotImplementedError, AttributeError, TypeError) as err:
        raise ConfigError(
            f"env.scenario='{scenario}' could not be made by the {suite} suite: "
            f"{str(err).splitlines()[0] if str(err) else type(err).__name__}"
        ) from err
