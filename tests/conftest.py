"""Every test runs with two CPU devices, so the multi-device paths are always exercised."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Many tests compile the same program more than once (a run, its kill -9 and its resume; the
# same config twice for determinism; the runs that `run_script` starts). JAX's persistent cache
# turns the repeats into loads; it lives under the ignored .pytest_cache, shared by pytest-xdist
# workers and by the subprocesses, which inherit these variables.
_CACHE = os.path.join(os.path.dirname(os.path.dirname(__file__)), ".pytest_cache", "jax-cache")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", _CACHE)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")

import pytest  # noqa: E402


def pytest_collection_modifyitems(items):
    # Learning curves (`make bench`) legitimately run longer than the default per-test timeout.
    for item in items:
        if item.get_closest_marker("slow") and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(3600))
