"""Runs a sweep of Stoix systems × envs × seeds (× grid) as SLURM or local jobs, one results tree.

    python launcher.py slurm.time=00:30:00 slurm.partition=gpu
    python launcher.py executor=local 'seeds=[0,1]' 'overrides=[arch.total_timesteps=1e5]'
    python launcher.py dry_run=True

Config: stoix/configs/launcher/launcher.yaml; logic: stoix/launch/jobs.py.
"""

import sys

import hydra
from omegaconf import DictConfig

from stoix.launch.jobs import main as launch_main


@hydra.main(config_path="stoix/configs/launcher", config_name="launcher", version_base="1.3")
def main(cfg: DictConfig) -> None:
    sys.exit(launch_main(cfg))


if __name__ == "__main__":
    main()
