"""The PPO family over the on-policy base (`stoix.systems.on_policy_base`): the policy losses of
PPO and DPO as their configs set them, and the checks of each.

Anakin PPO and Sebulba PPO share `ppo_policy_loss` and `validate_ppo`; DPO (discrete and
continuous) changes only the policy loss, so its two files share `build_dpo` and `validate_dpo`.
"""

import functools

from omegaconf import DictConfig

from stoix.systems.on_policy_base import make_build, validate_on_policy
from stoix.systems.on_policy_learning import PolicyLoss
from stoix.systems.ppo.ppo_losses import clipped_policy_loss, dpo_policy_loss
from stoix.utils.config import RunPlan, check_range


def ppo_policy_loss(sys_cfg: DictConfig) -> PolicyLoss:
    """PPO's clipped surrogate with `system.clip_epsilon`."""
    return functools.partial(clipped_policy_loss, clip_epsilon=float(sys_cfg.clip_epsilon))


def dpo_loss_from_config(sys_cfg: DictConfig) -> PolicyLoss:
    return functools.partial(dpo_policy_loss, alpha=float(sys_cfg.alpha), beta=float(sys_cfg.beta))


build_ppo = make_build(ppo_policy_loss)
build_dpo = make_build(dpo_loss_from_config)


def validate_ppo(
    cfg: DictConfig,
    plan: RunPlan,
    batch_label: str = "arch.total_num_envs / (devices × arch.update_batch_size)",
    envs_per_learner: int | None = None,
) -> None:
    """The base's checks (see `validate_on_policy` for the arguments) and PPO's clip."""
    validate_on_policy(cfg, plan, batch_label, envs_per_learner)
    check_range(cfg, "system.clip_epsilon", 0.0, float("inf"))


def validate_dpo(cfg: DictConfig, plan: RunPlan) -> None:
    validate_on_policy(cfg, plan)
    for key in ("alpha", "beta"):
        check_range(cfg, f"system.{key}", 1e-8, float("inf"))
