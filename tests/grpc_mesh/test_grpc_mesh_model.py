"""MeshCore's connection bookkeeping (picks, draining, re-adding) against a plain model."""

from __future__ import annotations

import random
from typing import Any

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from meshkit import NoAvailableEndpointError
from meshkit.balancing import Endpoint
from meshkit.grpc import ClientPolicy, MeshConfig
from meshkit.grpc._mesh import MeshCore
from meshkit.testing import FakeClock

POOL = [Endpoint(host="10.0.0.1", port=port) for port in range(9001, 9005)]


class Channel:
    """A stand-in channel that remembers being closed."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.closed = 0


class MeshMachine(RuleBasedStateMachine):
    """Random registry updates, picks and finishes; channels close once, only when drained."""

    @initialize()
    def start(self) -> None:
        self.clock = FakeClock()
        self.core = MeshCore(
            MeshConfig(host="svc"),
            ClientPolicy(clock=self.clock),
            None,
            self.clock,
            random.Random(0),
        )
        self.current: set[Endpoint] = set()
        self.picked: list[Any] = []
        self.channels: list[Channel] = []
        self.closed: list[Channel] = []

    def _connect(self, endpoint: Endpoint) -> Channel:
        channel = Channel(endpoint)
        self.channels.append(channel)
        return channel

    def _close(self, connections: list[Any]) -> None:
        for connection in connections:
            connection.channel.closed += 1
            self.closed.append(connection.channel)

    @rule(chosen=st.sets(st.sampled_from(POOL)))
    def update(self, chosen: set[Endpoint]) -> None:
        self._close(self.core.apply(sorted(chosen, key=lambda e: e.port), self._connect))
        self.current = set(chosen)

    @rule()
    def pick(self) -> None:
        route = self.core.config.route({})
        try:
            picked = self.core.pick(route, {})
        except NoAvailableEndpointError:
            assert not self.current
            return
        assert picked[0] in self.current
        self.picked.append(picked)

    @precondition(lambda self: self.picked)
    @rule(index=st.integers(min_value=0), failed=st.booleans())
    def finish(self, index: int, failed: bool) -> None:
        picked = self.picked.pop(index % len(self.picked))
        drained = self.core.finish(picked, RuntimeError("x") if failed else None)
        self._close([] if drained is None else [drained])

    @invariant()
    def bookkeeping(self) -> None:
        open_ = {c.endpoint: c for c in self.core.connections.values()}
        assert self.current <= set(open_)
        for endpoint, connection in open_.items():
            in_flight = sum(1 for p in self.picked if p[1] is connection)
            assert connection.active == in_flight
            if endpoint not in self.current:
                assert connection.draining
                assert in_flight > 0
        assert all(channel.closed == 1 for channel in self.closed)
        assert all(channel.closed == 0 for channel in self.channels if channel not in self.closed)


TestMeshCoreMachine = MeshMachine.TestCase
