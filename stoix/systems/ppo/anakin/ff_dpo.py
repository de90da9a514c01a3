"""Discovered Policy Optimisation (Lu et al., 2022) on the Anakin architecture.

PPO's machinery (`ff_ppo.make_build`) with the drift function that Lu et al. discovered by
meta-learning in place of PPO's clip (`ppo_losses.dpo_policy_loss`): r·A minus a penalty that
is flat near r = 1 and grows once the ratio moves the policy far in the direction the advantage
favours. `system.alpha` and `system.beta` shape the penalty for positive and negative
advantages; everything else (rollout, GAE, epochs × minibatches, value clip) is PPO's.
"""

import functools

from omegaconf import DictConfig

from stoix.systems.ppo.anakin.ff_ppo import PolicyLoss, make_build, validate_on_policy
from stoix.systems.ppo.ppo_losses import dpo_policy_loss
from stoix.utils.config import RunPlan, check_range
from stoix.utils.entry import hydra_main
from stoix.utils.runner import AnakinSystem, run_anakin


def dpo_loss_from_config(sys_cfg: DictConfig) -> PolicyLoss:
    return functools.partial(dpo_policy_loss, alpha=float(sys_cfg.alpha), beta=float(sys_cfg.beta))


build = make_build(dpo_loss_from_config)


def validate(cfg: DictConfig, plan: RunPlan) -> None:
    validate_on_policy(cfg, plan)
    for key in ("alpha", "beta"):
        check_range(cfg, f"system.{key}", 1e-8, float("inf"))


SYSTEM = AnakinSystem(name="ff_dpo", action_kinds=("discrete",), build=build, validate=validate)


def run_experiment(cfg: DictConfig) -> float:
    """Trains DPO as configured; returns the last evaluation's mean episode return."""
    return run_anakin(cfg, SYSTEM)


@hydra_main("ff_dpo")
def main(cfg: DictConfig) -> float:
    return run_experiment(cfg)


if __name__ == "__main__":
    main()
