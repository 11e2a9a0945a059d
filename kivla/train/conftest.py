import pytest

from kivla.train.testing import TORCHRUN_VARIABLES


@pytest.fixture
def single_process(monkeypatch):
    """No torchrun variables from the caller's shell: the in-process reference run is one rank."""
    for key in TORCHRUN_VARIABLES:
        monkeypatch.delenv(key, raising=False)
