"""REINFORCE over the on-policy base (`stoix.systems.on_policy_base`): the one thing it changes
is the policy loss, so `ff_reinforce.py` and `ff_reinforce_continuous.py` share this build."""

from omegaconf import DictConfig

from stoix.systems.on_policy_base import make_build
from stoix.systems.on_policy_learning import PolicyLoss
from stoix.systems.policy_gradient.pg_losses import policy_gradient_loss


def reinforce_policy_loss(sys_cfg: DictConfig) -> PolicyLoss:
    del sys_cfg  # the loss has no hyperparameters of its own
    return policy_gradient_loss


build_reinforce = make_build(reinforce_policy_loss)
