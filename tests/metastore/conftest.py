import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: one thread avoids oversubscription on the shared 2-core CI box."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
