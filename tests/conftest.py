"""Every test runs with two CPU devices, so the multi-device paths are always exercised.

Compiled programs go to JAX's persistent cache, shared by the pytest workers and the scripts
the tests start: tests that run one program several times (kill and resume, same seed same
numbers) compile it once. JAX keys each entry on the program, flags and versions, so a hit is
the same executable a fresh compilation would give.
"""

import os
import tempfile

from tests.helpers import TEST_XLA_FLAGS  # noqa: E402  (no jax import there)

os.environ.setdefault("XLA_FLAGS", TEST_XLA_FLAGS)
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR",
    os.path.join(tempfile.gettempdir(), f"stoix-test-jax-cache-{os.getuid()}"),
)

import pytest  # noqa: E402


def pytest_collection_modifyitems(items):
    # Learning curves (`make bench`) legitimately run longer than the default per-test timeout.
    for item in items:
        if item.get_closest_marker("slow") and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(3600))
