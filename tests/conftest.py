"""Shared test set-up."""

import os

import pytest
import torch

if os.environ.get("PYTEST_XDIST_WORKER"):
    # pytest -n auto starts one worker per core: one thread each, or the workers oversubscribe the cores.
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def restore_torch_global_state():
    """Training with deterministic=True or threads=N changes torch's process-wide settings."""
    threads = torch.get_num_threads()
    yield
    torch.use_deterministic_algorithms(False)
    torch.set_num_threads(threads)
