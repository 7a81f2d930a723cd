"""Real receivers on 127.0.0.1 for the channel tests, shared per module (stopping one takes half a second)."""

from __future__ import annotations

import pytest

from tests.support.receiver import Receiver


@pytest.fixture(scope="module")
def _receivers():
    started = [Receiver().start(), Receiver().start()]
    yield started
    for r in started:
        r.stop()


@pytest.fixture
def receiver(_receivers):
    """A real receiver on 127.0.0.1 with no requests and no scripts yet."""
    _receivers[0].reset()
    return _receivers[0]


@pytest.fixture
def second_receiver(_receivers):
    """Another receiver, on its own port."""
    _receivers[1].reset()
    return _receivers[1]
