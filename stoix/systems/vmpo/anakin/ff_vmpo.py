"""On-policy V-MPO (Song et al., 2019) on the Anakin architecture, for discrete actions.

Everything but the KL bound's name is shared with `ff_vmpo_continuous.py` in
`stoix.systems.vmpo.vmpo_base` (the E-step, the M-step and the Lagrange duals over the on-policy
base's rollout and GAE). A categorical policy has one KL bound, `system.epsilon_alpha`.
"""

from omegaconf import DictConfig

from stoix.runners.anakin import run_anakin
from stoix.system_api import AnakinSystem
from stoix.systems.vmpo.vmpo_base import build, validate_common
from stoix.utils.config import RunPlan, check_range
from stoix.utils.entry import hydra_main


def validate(cfg: DictConfig, plan: RunPlan) -> None:
    validate_common(cfg, plan)
    check_range(cfg, "system.epsilon_alpha", 1e-12, float("inf"))


SYSTEM = AnakinSystem(name="ff_vmpo", action_kinds=("discrete",), build=build, validate=validate)


def run_experiment(cfg: DictConfig) -> float:
    """Trains V-MPO as configured; returns the last evaluation's mean episode return."""
    return run_anakin(cfg, SYSTEM)


@hydra_main("ff_vmpo")
def main(cfg: DictConfig) -> float:
    return run_experiment(cfg)


if __name__ == "__main__":
    main()
