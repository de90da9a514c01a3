"""Discovered Policy Optimisation (Lu et al., 2022) on the Anakin architecture.

The on-policy actor-critic base (`stoix.systems.on_policy_base`) with the drift function that
Lu et al. discovered by meta-learning in place of PPO's clip (`ppo_losses.dpo_policy_loss`): r·A
minus a penalty that is flat near r = 1 and grows once the ratio moves the policy far in the
direction the advantage favours. `system.alpha` and `system.beta` shape the penalty for positive
and negative advantages; everything else (rollout, GAE, epochs × minibatches, value clip) is
PPO's.
"""

from omegaconf import DictConfig

from stoix.runners.anakin import run_anakin
from stoix.system_api import AnakinSystem
from stoix.systems.ppo.ppo_base import build_dpo, validate_dpo
from stoix.utils.entry import hydra_main

SYSTEM = AnakinSystem(
    name="ff_dpo", action_kinds=("discrete",), build=build_dpo, validate=validate_dpo
)


def run_experiment(cfg: DictConfig) -> float:
    """Trains DPO as configured; returns the last evaluation's mean episode return."""
    return run_anakin(cfg, SYSTEM)


@hydra_main("ff_dpo")
def main(cfg: DictConfig) -> float:
    return run_experiment(cfg)


if __name__ == "__main__":
    main()
