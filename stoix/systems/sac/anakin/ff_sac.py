"""SAC (Haarnoja et al., 2018) on Anakin for continuous actions: a tanh-Gaussian actor, twin
Q(s, a) critics and a tuned temperature. Its machinery, shared with discrete SAC, is
`stoix/systems/sac/sac_base.py`."""

from omegaconf import DictConfig

from stoix.runners.anakin import run_anakin
from stoix.system_api import AnakinSystem
from stoix.systems.sac.sac_base import build, validate
from stoix.utils.entry import hydra_main

SYSTEM = AnakinSystem(name="ff_sac", action_kinds=("continuous",), build=build, validate=validate)


def run_experiment(cfg: DictConfig) -> float:
    """Trains SAC as configured; returns the last evaluation's mean episode return."""
    return run_anakin(cfg, SYSTEM)


@hydra_main("ff_sac")
def main(cfg: DictConfig) -> float:
    return run_experiment(cfg)


if __name__ == "__main__":
    main()
