"""AWR for continuous actions: the discrete system's machinery with a Gaussian policy.

The network config supplies the Gaussian head; sampled actions are clipped to the env's bounds
before they are stored, so the policy regresses onto the actions the env actually received.
"""

from omegaconf import DictConfig

from stoix.systems.awr.anakin.ff_awr import build, validate
from stoix.utils.entry import hydra_main
from stoix.utils.runner import AnakinSystem, run_anakin

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
