"""The house rules of docs/architecture.md hold for the whole package, and the checker catches
each kind of breach when one is planted in a small package of its own."""

import textwrap
from pathlib import Path

import pytest

from tests.helpers import REPO
from tests.layering import MAX_LINES, violations


def test_the_package_keeps_the_house_rules():
    found = violations(REPO)
    assert not found, "\n".join(f"{v.rule}: {v.detail}" for v in found)


def _plant(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


# A small package that keeps every rule; each case below adds one breach to it.
CLEAN = {
    "stoix/__init__.py": "",
    "stoix/errors.py": "class ConfigError(ValueError): ...\n",
    "stoix/utils/__init__.py": "",
    "stoix/utils/config.py": "from stoix.errors import ConfigError\n",
    "stoix/networks/__init__.py": "",
    "stoix/networks/torso.py": "from stoix.utils.config import ConfigError\n",
    "stoix/wrappers/__init__.py": "",
    "stoix/wrappers/gymnax.py": "from stoix.utils import config\n",
    "stoix/system_api.py": "from stoix.utils.config import ConfigError\n",
    "stoix/runners/__init__.py": "",
    "stoix/runners/anakin.py": "from stoix.system_api import ConfigError\n",
    "stoix/systems/__init__.py": "",
    "stoix/systems/ppo/__init__.py": "",
    "stoix/systems/ppo/ppo_losses.py": "import jax\n",
    "stoix/systems/ppo/anakin/__init__.py": "",
    "stoix/systems/ppo/anakin/ff_ppo.py": (
        "from stoix.systems.ppo import ppo_losses\nfrom stoix.runners.anakin import ConfigError\n"
    ),
    "stoix/systems/ppo/anakin/ff_dpo.py": "from stoix.systems.ppo.ppo_losses import jax\n",
}


def test_a_clean_package_passes(tmp_path):
    assert violations(_plant(tmp_path, CLEAN)) == []


@pytest.mark.parametrize(
    "rule, breach",
    [
        (
            "shared imports systems",
            {
                "stoix/runners/sebulba.py": "def f():\n    from stoix.systems.ppo import ppo_losses\n"
            },
        ),
        (
            "system imports system",
            {
                "stoix/systems/ppo/anakin/ff_dpo.py": "from stoix.systems.ppo.anakin.ff_ppo import x\n"
            },
        ),
        (
            "system imports system",
            {"stoix/systems/ppo/anakin/ff_dpo.py": "from .ff_ppo import x\n"},
        ),
        (
            "parts apart",
            {"stoix/wrappers/brax.py": "from stoix.networks import torso\n"},
        ),
        (
            "upward import",
            {"stoix/wrappers/brax.py": "from stoix.runners.anakin import x\n"},
        ),
        (
            "upward import",
            {
                "stoix/utils/replay.py": (
                    "from typing import TYPE_CHECKING\n"
                    "if TYPE_CHECKING:\n    from stoix.system_api import SystemParts\n"
                )
            },
        ),
        ("floor imports", {"stoix/parallel.py": "from stoix.wrappers import gymnax\n"}),
        (
            "import cycle",
            {
                "stoix/utils/a.py": "def f():\n    import stoix.utils.b\n",
                "stoix/utils/b.py": "from stoix.utils import a\n",
            },
        ),
        ("file too long", {"stoix/utils/long.py": "x = 1\n" * (MAX_LINES + 1)}),
    ],
)
def test_each_planted_breach_is_reported(tmp_path, rule, breach):
    found = violations(_plant(tmp_path, {**CLEAN, **breach}))
    assert {v.rule for v in found} == {rule}, found
