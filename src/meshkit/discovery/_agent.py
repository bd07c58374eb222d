"""The only place that touches the `consul` client: building it, calling it, translating errors.

python-consul2 and its maintained fork py-consul install the same `consul` module; both are
supported. Only their HTTP layer (`consul.std.HTTPClient`: session, TLS, URL building) is
used, with meshkit's own response callback, because their high-level methods differ between
the two (python-consul2's `register()` drops `Weights` and port 0; their exception classes
differ), and one callback gives one status-to-error translation for both. The HTTP client is
built directly rather than through `consul.Consul`, whose python-consul2 constructor lets
`CONSUL_HTTP_ADDR`/`CONSUL_HTTP_SSL`/`CONSUL_HTTP_SSL_VERIFY` override the address, scheme and
verification it is given (and warns twice about an ACL API meshkit never calls).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import socket
import weakref
from typing import TYPE_CHECKING, Any, NamedTuple, final

import attrs

from meshkit._errors import (
    ConfigurationError,
    RegistryAccessDeniedError,
    RegistryNotFoundError,
    RegistryRequestError,
    RegistryUnavailableError,
)
from meshkit._validate import require
from meshkit.discovery._config import port_number

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

__all__ = ["Agent", "AgentCall", "Answer", "parse_agent"]

_HTTP_OK_MIN, _HTTP_OK_MAX = 200, 299
_HTTP_NOT_FOUND, _HTTP_CLIENT_MAX = 404, 499
# Consul's rate limits answer 429: the request was fine, the agent is busy; retry (elsewhere).
_HTTP_TOO_MANY_REQUESTS = 429
# Consul 1.8 answers a TTL update for a check it does not know, and (with ACLs on) the
# deregistration of a service it does not know, with a 500 and one of these texts; newer
# agents answer 404. Both mean "the agent does not know it".
_UNKNOWN_TEXTS = ("does not have associated TTL", "Unknown service")


@attrs.frozen
class Agent:
    """One Consul agent's HTTP address."""

    scheme: str
    host: str
    port: int

    @property
    def url_host(self) -> str:
        """Return the host as a URL spells it: an IPv6 literal in brackets."""
        return f"[{self.host}]" if ":" in self.host else self.host

    @property
    def url(self) -> str:
        """Return `scheme://host:port`."""
        return f"{self.scheme}://{self.url_host}:{self.port}"


def parse_agent(text: object) -> Agent:
    """Parse `host:port`, `http://host:port` or `https://host:port` (`[v6]:port` too).

    Raises:
        ConfigurationError: If `text` is not such an address.
    """
    require(isinstance(text, str), "addresses", text, "must be str")
    value: str = text  # type: ignore[assignment]  # checked just above
    scheme, sep, rest = value.partition("://")
    if not sep:
        scheme, rest = "http", value
    host, _, port = rest.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    ok = (
        scheme in {"http", "https"}
        and bool(host)
        and host.isascii()
        and host.isprintable()
        and not any(c in host for c in " /?#@")
        and port_number(port) is not None
    )
    require(ok, "addresses", text, "must be host:port or http(s)://host:port")
    return Agent(scheme, host, int(port))


class Answer(NamedTuple):
    """What the agent answered: the status, the `X-Consul-Index` header, the decoded body."""

    status: int
    consul_index: str | None
    body: object


def _blocking_timeout_parameter() -> str:
    """Return the client's name for its request timeout, which differs between the forks.

    python-consul2 takes `timeout=`, one value for every request (so a blocking query's wait
    must fit under it); py-consul takes `connections_timeout=` and adds a blocking query's
    wait and jitter to it by itself.
    """
    import consul.std  # noqa: PLC0415 - optional dependency, imported where it is needed

    params = inspect.signature(consul.std.HTTPClient.__init__).parameters
    return "connections_timeout" if "connections_timeout" in params else "timeout"


@final
@attrs.define(eq=False)
class AgentCall:
    """Sync calls to a list of agents, one `consul.std.HTTPClient` per agent.

    Built in the event loop's thread; its methods run in worker threads. Each watch and each
    registration has its own, so no `requests` session is shared between threads.

    Attributes:
        agents: The agents, in failover order.
        token: The ACL token sent as `X-Consul-Token`, or None.
        timeout: Seconds for a plain request to connect and answer.
        wait: The longest blocking-query wait this caller will send, in seconds.
    """

    agents: Sequence[Agent]
    token: str | None
    timeout: float
    wait: float
    verify: bool | str = True
    cert: str | tuple[str, str] | None = None
    _clients: list[Any] = attrs.field(init=False, factory=list)

    def __attrs_post_init__(self) -> None:
        try:
            import consul.std  # noqa: PLC0415 - optional dependency
        except ImportError as exc:  # pragma: no cover - the consul extra installs it
            raise ConfigurationError(
                "ConsulRegistry", "consul", "needs python-consul2: pip install 'meshkit[consul]'"
            ) from exc
        name = _blocking_timeout_parameter()
        # Consul adds up to wait/16 of jitter to a blocking query; the read timeout must
        # cover it, or every idle query would end in a timeout instead of an answer. The
        # connect timeout stays short (requests takes a pair), so that an agent that does not
        # accept connections is failed over in `timeout`, not in a whole wait.
        timeout: float | tuple[float, float] = (
            self.timeout
            if name == "connections_timeout"
            else (self.timeout, self.timeout + self.wait * 17 / 16)
        )
        self._clients = [
            consul.std.HTTPClient(
                a.url_host, a.port, a.scheme, self.verify, self.cert, **{name: timeout}
            )
            for a in self.agents
        ]
        for client in self._clients:
            _track_connections(client.session)

    def interrupt(self) -> None:
        """Shut down every connection of these clients, from any thread.

        A blocking query cannot be cancelled: its worker thread sits in `recv()` until the
        agent answers, up to `wait` later. Shutting its socket down wakes it at once, so a
        closed watch does not leave a thread behind (on asyncio, anyio's worker threads are
        not daemons: a process would wait for them at exit).
        """
        for client in self._clients:
            session = client.session
            for adapter in session.adapters.values():
                pools = adapter.poolmanager.pools
                for key in list(pools.keys()):
                    with contextlib.suppress(KeyError):
                        _shutdown(pools[key])
            session.close()

    def get(self, agent: int, path: str, params: Sequence[tuple[str, str]] = ()) -> Answer:
        """GET `path` from agent number `agent`.

        Raises:
            DiscoveryError: The agent failed, refused or answered an error (a subclass).
        """
        return self._call(agent, "get", path, params=list(params))

    def put(self, agent: int, path: str, body: Mapping[str, object] | None = None) -> Answer:
        """PUT `path` (with a JSON `body`) to agent number `agent`.

        Raises:
            DiscoveryError: The agent failed, refused or answered an error (a subclass).
        """
        data = "" if body is None else json.dumps(body)
        return self._call(agent, "put", path, data=data)

    def _call(self, agent: int, method: str, path: str, **kwargs: object) -> Answer:
        url = self.agents[agent].url
        headers = {} if self.token is None else {"X-Consul-Token": self.token}
        call = getattr(self._clients[agent], method)
        try:
            answer: Answer = call(_decode, path, headers=headers, **kwargs)
        except Exception as exc:  # requests' and urllib3's errors: unreachable, timeout, TLS
            raise RegistryUnavailableError(url, path, f"{type(exc).__name__}: {exc}") from exc
        return _checked(url, path, answer)


@functools.cache
def _tracking_pools() -> dict[str, type]:
    """Return urllib3 pool classes that remember the connections they opened."""
    from urllib3.connectionpool import (  # noqa: PLC0415 - comes with the consul client
        HTTPConnectionPool,
        HTTPSConnectionPool,
    )

    def tracking(base: type[HTTPConnectionPool]) -> type:
        class Tracking(base):  # type: ignore[valid-type,misc]  # a dynamic subclass
            def _new_conn(self) -> Any:  # noqa: ANN401 - urllib3's connection classes
                conn = super()._new_conn()
                opened = self.__dict__.setdefault("meshkit_opened", weakref.WeakSet())
                opened.add(conn)
                return conn

        # urllib3 names the pool's class in its errors: keep the name users know.
        Tracking.__name__ = Tracking.__qualname__ = base.__name__
        return Tracking

    return {"http": tracking(HTTPConnectionPool), "https": tracking(HTTPSConnectionPool)}


def _track_connections(session: Any) -> None:  # noqa: ANN401 - a requests.Session
    for adapter in session.adapters.values():
        adapter.poolmanager.pool_classes_by_scheme = _tracking_pools()


def _shutdown(pool: Any) -> None:  # noqa: ANN401 - a urllib3 pool
    for conn in list(pool.__dict__.get("meshkit_opened", ())):
        sock = getattr(conn, "sock", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def _decode(response: Any) -> Answer:  # noqa: ANN401 - the two forks' Response types differ
    """Turn the client's response tuple into an `Answer` (the client's callback)."""
    index = response.headers.get("X-Consul-Index")
    try:
        body = json.loads(response.body) if response.body else None
    except ValueError:
        body = response.body
    return Answer(int(response.code), index, body)


def _checked(url: str, path: str, answer: Answer) -> Answer:
    """Return `answer` if it is a success, else raise the matching `DiscoveryError`."""
    status, body = answer.status, answer.body
    if _HTTP_OK_MIN <= status <= _HTTP_OK_MAX:
        return answer
    text = f"HTTP {status}: {str(body).strip()[:200]}"
    if status == _HTTP_NOT_FOUND or any(known in str(body) for known in _UNKNOWN_TEXTS):
        raise RegistryNotFoundError(url, path, text)
    if status in {401, 403}:
        raise RegistryAccessDeniedError(url, path, text)
    if status <= _HTTP_CLIENT_MAX and status != _HTTP_TOO_MANY_REQUESTS:
        raise RegistryRequestError(url, path, text)
    raise RegistryUnavailableError(url, path, text)
