"""MPO (Abdolmaleki et al., 2018) on Anakin for discrete actions: every action is enumerated with
its target-policy probability (exact bootstrap expectation, categorical KL). Its machinery,
shared with continuous MPO, is `stoix/systems/mpo/mpo_base.py`."""

from omegaconf import DictConfig

from stoix.runners.anakin import run_anakin
from stoix.system_api import AnakinSystem
from stoix.systems.mpo.mpo_base import build, validate
from stoix.utils.entry import hydra_main

SYSTEM = AnakinSystem(name="ff_mpo", action_kinds=("discrete",), build=build, validate=validate)


def run_experiment(cfg: DictConfig) -> float:
    """Trains MPO as configured; returns the last evaluation's mean episode return."""
    return run_anakin(cfg, SYSTEM)


@hydra_main("ff_mpo")
def main(cfg: DictConfig) -> float:
    return run_experiment(cfg)


if __name__ == "__main__":
    main()
