"""V-MPO for continuous actions: the discrete system with a Gaussian policy head, whose mean and
std get their own KL bounds (`system.epsilon_alpha_mean`, `system.epsilon_alpha_std`).

Actions are clipped to the env's bounds only on their way to the env, so the stored action's
log-probability stays exact.
"""

from omegaconf import DictConfig

from stoix.runners.anakin import run_anakin
from stoix.system_api import AnakinSystem
from stoix.systems.vmpo.vmpo_base import build, validate_common
from stoix.utils.config import RunPlan, check_range
from stoix.utils.entry import hydra_main


def validate(cfg: DictConfig, plan: RunPlan) -> None:
    validate_common(cfg, plan)
    for key in ("epsilon_alpha_mean", "epsilon_alpha_std"):
        check_range(cfg, f"system.{key}", 1e-12, float("inf"))


SYSTEM = AnakinSystem(
    name="ff_vmpo_continuous", action_kinds=("continuous",), build=build, validate=validate
)


def run_experiment(cfg: DictConfig) -> float:
    """Trains continuous-action V-MPO as configured; returns the last evaluation's mean return."""
    return run_anakin(cfg, SYSTEM)


@hydra_main("ff_vmpo_continuous")
def main(cfg: DictConfig) -> float:
    return run_experiment(cfg)


if __name__ == "__main__":
    main()
