"""Shared test set-up."""

import pytest
import torch


@pytest.fixture(autouse=True)
def restore_torch_global_state():
    """Training with deterministic=True or threads=N changes torch's process-wide settings."""
    threads = torch.get_num_threads()
    yield
    torch.use_deterministic_algorithms(False)
    torch.set_num_threads(threads)
