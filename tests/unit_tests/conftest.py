"""Unit tests never touch the network: TCP/UDP sockets are disabled (unix sockets,
which asyncio's event loop needs, stay allowed)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

import pytest
import pytest_socket


@pytest.fixture(autouse=True)
def _no_network() -> Iterator[None]:
    pytest_socket.disable_socket(allow_unix_socket=True)
    try:
        yield
    finally:
        pytest_socket.enable_socket()


# -- the server component's fixtures (helpers in server_fakes.py) ---------------------
#
# Imported inside the fixtures, so the other unit tests run without the server extra.

if TYPE_CHECKING:
    import httpx

    from dynasor_agents.server import DynasorMiddleware
    from tests.unit_tests.server_fakes import Clock, FakeAuth, FakeVLLM


@pytest.fixture
def clock() -> Clock:
    from tests.unit_tests.server_fakes import Clock

    return Clock()


@pytest.fixture
def fake() -> FakeVLLM:
    from tests.unit_tests.server_fakes import FakeVLLM

    return FakeVLLM()


@pytest.fixture
def mw(fake: FakeVLLM, clock: Clock) -> DynasorMiddleware:
    """The component with default settings (dynasor scheduling), programs never expire."""
    from prometheus_client import CollectorRegistry

    from dynasor_agents.server import DynasorMiddleware, ProgramTable

    table = ProgramTable(clock=clock, ttl=1e9)
    return DynasorMiddleware(fake, table=table, registry=CollectorRegistry())


@pytest.fixture
async def client(mw: DynasorMiddleware) -> AsyncIterator[httpx.AsyncClient]:
    from tests.unit_tests.server_fakes import client_for

    async with client_for(mw) as c:
        yield c


@pytest.fixture
def auth(fake: FakeVLLM) -> FakeAuth:
    """vLLM's authentication with two API keys, ``TOKEN`` and ``OTHER_TOKEN``."""
    from tests.unit_tests.server_fakes import OTHER_TOKEN, TOKEN, FakeAuth

    return FakeAuth(fake, TOKEN, OTHER_TOKEN)


@pytest.fixture
async def secured(
    auth: FakeAuth, clock: Clock
) -> AsyncIterator[tuple[httpx.AsyncClient, DynasorMiddleware]]:
    """A client and the component, outside a pass-through middleware and the auth layer."""
    from prometheus_client import CollectorRegistry

    from dynasor_agents.server import DynasorMiddleware, ProgramTable
    from tests.unit_tests.server_fakes import Passthrough, client_for

    dyn = DynasorMiddleware(
        Passthrough(auth), table=ProgramTable(clock=clock), registry=CollectorRegistry()
    )
    async with client_for(dyn) as c:
        yield c, dyn
