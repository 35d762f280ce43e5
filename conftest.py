"""Settings for the whole suite (tests/ and the package's doctests).

The suite keeps cadenza's cache (``$CADENZA_CACHE``: the kernel choices of
:mod:`cadenza.kernels.measured` and the rendered scores of :mod:`cadenza.data.prepare`) in a
folder of its own, so that a test run neither reads the user's cache (a test would then skip
the measuring or rendering it means to exercise) nor leaves its own, made beside other tests on
a busy machine, in ``~/.cache/cadenza`` for later runs. The folder is made once by the main process and shared
with pytest-xdist's workers and every command a test starts, which inherit the environment.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

_OWN = "_CADENZA_TEST_CACHE"


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get(_OWN):  # a worker: the main process made it
        return
    folder = tempfile.mkdtemp(prefix="cadenza-test-cache-")
    os.environ["CADENZA_CACHE"] = os.environ[_OWN] = folder


def pytest_unconfigure(config: pytest.Config) -> None:
    if os.environ.get("PYTEST_XDIST_WORKER"):
        return
    folder = os.environ.pop(_OWN, None)
    if folder:
        shutil.rmtree(folder, ignore_errors=True)
