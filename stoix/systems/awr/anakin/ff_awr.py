"""AWR (Peng et al., 2019) on Anakin for discrete actions: a categorical policy regressed onto
replayed actions weighted by their TD(λ) advantages. Its machinery, shared with continuous AWR,
is `stoix/systems/awr/awr_base.py`."""

from omegaconf import DictConfig

from stoix.runners.anakin import run_anakin
from stoix.system_api import AnakinSystem
from stoix.systems.awr.awr_base import build, validate
from stoix.utils.entry import hydra_main

SYSTEM = AnakinSystem(name="ff_awr", action_kinds=("discrete",), build=build, validate=validate)


def run_experiment(cfg: DictConfig) -> float:
    """Trains AWR as configured; returns the last evaluation's mean episode return."""
    return run_anakin(cfg, SYSTEM)


@hydra_main("ff_awr")
def main(cfg: DictConfig) -> float:
    return run_experiment(cfg)


if __name__ == "__main__":
    main()
