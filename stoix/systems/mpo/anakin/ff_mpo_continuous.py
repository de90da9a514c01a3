"""MPO for continuous actions: MPO's machinery (`stoix/systems/mpo/mpo_base.py`) with a Gaussian
policy.

The network config supplies the Gaussian policy (`NormalHead`) and a Q(s, a) critic; the E-step
samples `system.num_samples` actions per state from the target policy and the M-step bounds the
mean's and the standard deviation's KL separately, per action dimension.
"""

from omegaconf import DictConfig

from stoix.runners.anakin import run_anakin
from stoix.system_api import AnakinSystem
from stoix.systems.mpo.mpo_base import build, validate
from stoix.utils.entry import hydra_main

SYSTEM = AnakinSystem(
    name="ff_mpo_continuous", action_kinds=("continuous",), build=build, validate=validate
)


def run_experiment(cfg: DictConfig) -> float:
    """Trains continuous-action MPO as configured; returns the last evaluation's mean return."""
    return run_anakin(cfg, SYSTEM)


@hydra_main("ff_mpo_continuous")
def main(cfg: DictConfig) -> float:
    return run_experiment(cfg)


if __name__ == "__main__":
    main()
