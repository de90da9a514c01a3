"""PPO (Schulman et al., 2017) on the Anakin architecture, for discrete actions.

The on-policy actor-critic base (`stoix.systems.on_policy_base`) with PPO's clipped surrogate
(`ppo_base.ppo_policy_loss`): rollout, GAE, epochs × minibatches with a clipped value loss and
an entropy bonus. `ff_ppo_continuous.py` is the same system with a Gaussian policy head.
"""

from omegaconf import DictConfig

from stoix.runners.anakin import run_anakin
from stoix.system_api import AnakinSystem
from stoix.systems.ppo.ppo_base import build_ppo, validate_ppo
from stoix.utils.entry import hydra_main

SYSTEM = AnakinSystem(
    name="ff_ppo", action_kinds=("discrete",), build=build_ppo, validate=validate_ppo
)


def run_experiment(cfg: DictConfig) -> float:
    """Trains PPO as configured; returns the last evaluation's mean episode return."""
    return run_anakin(cfg, SYSTEM)


@hydra_main("ff_ppo")
def main(cfg: DictConfig) -> float:
    return run_experiment(cfg)


if __name__ == "__main__":
    main()
