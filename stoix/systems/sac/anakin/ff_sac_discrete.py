"""Discrete SAC (Christodoulou, 2019): SAC's machinery (`stoix/systems/sac/sac_base.py`) with a
categorical actor and critics giving Q(s, ·), so every expectation over the policy is an exact
sum over actions."""

from omegaconf import DictConfig

from stoix.runners.anakin import run_anakin
from stoix.system_api import AnakinSystem
from stoix.systems.sac.sac_base import build, validate
from stoix.utils.entry import hydra_main

SYSTEM = AnakinSystem(
    name="ff_sac_discrete", action_kinds=("discrete",), build=build, validate=validate
)


def run_experiment(cfg: DictConfig) -> float:
    """Trains discrete SAC as configured; returns the last evaluation's mean episode return."""
    return run_anakin(cfg, SYSTEM)


@hydra_main("ff_sac_discrete")
def main(cfg: DictConfig) -> float:
    return run_experiment(cfg)


if __name__ == "__main__":
    main()
