"""Discrete SAC (Christodoulou, 2019): `ff_sac`'s machinery with a categorical actor and critics
giving Q(s, ·), so every expectation over the policy is an exact sum over actions."""

from omegaconf import DictConfig

from stoix.systems.sac.anakin.ff_sac import build, validate
from stoix.utils.entry import hydra_main
from stoix.utils.runner import AnakinSystem, run_anakin

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
