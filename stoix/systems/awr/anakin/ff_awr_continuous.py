"""AWR for continuous actions: AWR's machinery (`stoix/systems/awr/awr_base.py`) with a Gaussian
policy.

The network config supplies the Gaussian head; sampled actions are clipped to the env's bounds
before they are stored, so the policy regresses onto the actions the env actually received.
"""

from omegaconf import DictConfig

from stoix.runners.anakin import run_anakin
from stoix.system_api import AnakinSystem
from stoix.systems.awr.awr_base import build, validate
from stoix.utils.entry import hydra_main

SYSTEM = AnakinSystem(
    name="ff_awr_continuous", action_kinds=("continuous",), build=build, validate=validate
)


def run_experiment(cfg: DictConfig) -> float:
    """Trains continuous-action AWR as configured; returns the last evaluation's mean return."""
    return run_anakin(cfg, SYSTEM)


@hydra_main("ff_awr_continuous")
def main(cfg: DictConfig) -> float:
    return run_experiment(cfg)


if __name__ == "__main__":
    main()
