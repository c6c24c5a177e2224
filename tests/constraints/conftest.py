import pytest
import torch


@pytest.fixture(autouse=True)
def single_thread():
    """These tests use tiny tensors; with two threads on a busy shared CPU every small op can stall on
    the thread barrier, so run them single-threaded and restore the setting afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
