"""The pure cores: authorization, propagation, status mapping, client and server plans."""

from __future__ import annotations

import math

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshkit import (
    CircuitOpenError,
    ConfigurationError,
    DeadlineExceededError,
    PermissionDeniedError,
    RpcStatusError,
)
from meshkit.grpc import (
    Action,
    AuthorizationPolicy,
    ClientPolicy,
    Code,
    Operation,
    RetryPolicy,
    Rule,
    ServerPolicy,
    Source,
    TraceContext,
    is_mutating,
)
from meshkit.grpc._authz import authorize, principal_of
from meshkit.grpc._client import PerTryTimeoutError
from meshkit.grpc._codes import INTERNAL_DETAILS, error_for, status_for
from meshkit.grpc._propagation import check_idempotency_key, parse_correlation_id
from meshkit.grpc._server import IncomingCall
from meshkit.resilience import Timeout, time_remaining
from meshkit.testing import FakeClock

PATH = "/shop.Orders/CreateOrder"
GATEWAY = "cluster.local/ns/shop/sa/gateway"
nasty = st.text() | st.sampled_from(["\ud800", "\x00", "a" * 10_000, "*", ""])


def _allow(*principals: str) -> AuthorizationPolicy:
    return AuthorizationPolicy(rules=(Rule(sources=(Source(principals=principals),)),))


class TestAuthorization:
    """Istio AuthorizationPolicy semantics."""

    def test_istio_matching(self) -> None:
        """Exact, prefix, suffix and presence patterns match as Istio's do."""
        for pattern, allowed in [
            (GATEWAY, True),
            ("cluster.local/ns/shop/*", True),
            ("*/sa/gateway", True),
            ("*", True),
            ("cluster.local/ns/other/*", False),
        ]:
            verdict = True
            try:
                authorize((_allow(pattern),), GATEWAY, PATH)
            except PermissionDeniedError:
                verdict = False
            assert verdict is allowed, pattern
        with pytest.raises(PermissionDeniedError, match="unauthenticated"):
            authorize((_allow("*"),), None, PATH)

    def test_deny_first_and_allow_nothing(self) -> None:
        """DENY wins over ALLOW; an ALLOW policy without rules allows nothing."""
        deny = AuthorizationPolicy(
            action=Action.DENY, rules=(Rule(operations=(Operation(paths=("/shop.Orders/*",)),)),)
        )
        with pytest.raises(PermissionDeniedError):
            authorize((_allow(GATEWAY), deny), GATEWAY, PATH)
        with pytest.raises(PermissionDeniedError):
            authorize((AuthorizationPolicy(),), GATEWAY, PATH)
        authorize((AuthorizationPolicy(action=Action.DENY),), GATEWAY, PATH)
        get_only = Operation(methods=("GET",))
        authorize(
            (AuthorizationPolicy(action=Action.DENY, rules=(Rule(operations=(get_only,)),)),),
            None,
            PATH,
        )
        not_paths = Operation(not_paths=("/shop.Orders/Create*",))
        with pytest.raises(PermissionDeniedError):
            authorize((AuthorizationPolicy(rules=(Rule(operations=(not_paths,)),)),), None, PATH)

    @given(principal=nasty, path=nasty)
    def test_no_policy_allows_and_deny_never_widens(self, principal: str, path: str) -> None:
        """Without policies everything passes; adding a DENY policy never allows more."""
        authorize((), principal, path)
        deny_all = AuthorizationPolicy(action=Action.DENY, rules=(Rule(),))
        with pytest.raises(PermissionDeniedError):
            authorize((deny_all,), principal, path)

    def test_bad_config(self) -> None:
        """A bad pattern list or rule is a ConfigurationError naming the field."""
        with pytest.raises(ConfigurationError, match="principals"):
            Source(principals="cluster.local/*")  # type: ignore[arg-type]
        with pytest.raises(ConfigurationError, match="principals"):
            Source(principals=(1,))  # type: ignore[arg-type]
        with pytest.raises(ConfigurationError, match="rules"):
            AuthorizationPolicy(rules=("x",))  # type: ignore[arg-type]
        with pytest.raises(ConfigurationError, match="authorization"):
            ServerPolicy(authorization=None)  # type: ignore[arg-type]

    def test_principal_of(self) -> None:
        """A SPIFFE id loses its scheme; anything else is no principal."""
        assert principal_of("spiffe://" + GATEWAY) == GATEWAY
        assert principal_of("https://x") is None
        assert principal_of(None) is None


class TestPropagation:
    """Correlation ids, trace context and idempotency keys."""

    @given(st.text())
    def test_parse_never_raises(self, text: str) -> None:
        """Any header text parses to a context or None; any id text to a usable id."""
        parsed = TraceContext.parse(text)
        if parsed is not None:
            assert TraceContext.parse(parsed.header()) == parsed
        assert parse_correlation_id(text) == text or len(parse_correlation_id(text)) == 32

    def test_trace_children(self) -> None:
        """A child keeps the trace id and takes a new span; zero ids are invalid."""
        root = TraceContext.new()
        child = root.child()
        assert child.trace_id == root.trace_id
        assert child.span_id != root.span_id
        assert TraceContext.parse(f"00-{'0' * 32}-{'1' * 16}-01") is None
        assert TraceContext.parse(f"00-{'1' * 32}-{'0' * 16}-01") is None
        assert TraceContext.parse(root.header() + "\n") is None

    @pytest.mark.parametrize("key", ["", "a b", "x" * 129, "\ud800", "k\x00", "ok\n"])
    def test_bad_idempotency_keys(self, key: str) -> None:
        """A malformed key is a ConfigurationError naming the header."""
        with pytest.raises(ConfigurationError, match="idempotency-key"):
            check_idempotency_key(key)
        assert check_idempotency_key("order-42:v1") == "order-42:v1"


class TestStatusMapping:
    """Errors to statuses and back."""

    def test_status_for(self) -> None:
        """Known meshkit errors keep their message; anything else is a fixed INTERNAL text."""
        assert status_for(CircuitOpenError("b", 1.0))[0] is Code.UNAVAILABLE
        assert status_for(RpcStatusError("NOT_FOUND", "gone")) == (Code.NOT_FOUND, "gone")
        assert status_for(RpcStatusError("BOGUS", "x"))[0] is Code.UNKNOWN
        assert status_for(RpcStatusError("OK", "x"))[0] is Code.UNKNOWN
        assert status_for(KeyError("secret")) == (Code.INTERNAL, INTERNAL_DETAILS)

    def test_error_for(self) -> None:
        """DEADLINE_EXCEEDED becomes DeadlineExceededError; others RpcStatusError."""
        assert isinstance(error_for(Code.DEADLINE_EXCEEDED, "late"), DeadlineExceededError)
        error = error_for(Code.ABORTED, "conflict", "/a.B/C")
        assert isinstance(error, RpcStatusError)
        assert (error.code, error.method) == ("ABORTED", "/a.B/C")


class TestClientPlan:
    """ClientPolicy.plan: deadline, metadata, attempts."""

    def test_metadata(self) -> None:
        """Correlation id, traceparent and a key for mutating methods are added once."""
        plan = ClientPolicy().plan(PATH, None, (("idempotency-key", "mine"),))
        keys = [k for k, _ in plan.metadata]
        assert keys.count("idempotency-key") == 1
        assert {"x-correlation-id", "traceparent"} <= set(keys)
        read = ClientPolicy(propagate=False).plan("/shop.Orders/GetOrder", None, None)
        assert read.metadata == ()
        assert is_mutating("/a.B/Getaway")
        assert not is_mutating("/a.B/List")

    @pytest.mark.anyio
    async def test_deadline(self, clock: FakeClock) -> None:
        """The earliest of the timeouts and the enclosing deadline minus the margin."""
        policy = ClientPolicy(deadline_margin=0.5, timeout=10, clock=clock)
        assert policy.plan(PATH, None, None).attempt_timeout() == 10
        assert policy.plan(PATH, 0.3, None).attempt_timeout() == 0.3  # not spent by the margin
        async with Timeout(2, clock=clock):
            plan = policy.plan(PATH, 5, None)
            assert plan.attempt_timeout() == 1.5
            clock.advance(1.6)
            with pytest.raises(DeadlineExceededError):
                plan.attempt_timeout()
        assert ClientPolicy(clock=clock).plan(PATH, None, None).attempt_timeout() is None
        assert time_remaining() is None

    def test_per_try(self, clock: FakeClock) -> None:
        """A per-try timeout bounds each attempt; its own expiry is retryable."""
        retries = RetryPolicy(per_try_timeout=1, retry_on=("unavailable", Code.INTERNAL))
        plan = ClientPolicy(retries=retries, clock=clock).plan(PATH, 10, None)
        assert plan.attempt_timeout() == 1
        with pytest.raises(PerTryTimeoutError):
            plan.failure(Code.DEADLINE_EXCEEDED, "late", 1)
        with pytest.raises(DeadlineExceededError):
            plan.failure(Code.DEADLINE_EXCEEDED, "late", 0.5)
        assert isinstance(plan.failure(Code.NOT_FOUND, "no", 1).error, RpcStatusError)
        unbounded = ClientPolicy(retries=retries, clock=clock).plan(PATH, None, None)
        assert unbounded.attempt_timeout() == 1

    @pytest.mark.parametrize(
        ("field", "kwargs"),
        [
            ("deadline_margin", {"deadline_margin": math.nan}),
            ("timeout", {"timeout": -1}),
            ("timeout", {"timeout": math.inf}),
            ("retries", {"retries": 3}),
            ("idempotency_keys", {"idempotency_keys": "yes"}),
        ],
    )
    def test_bad_config(self, field: str, kwargs: dict[str, object]) -> None:
        """Bad knobs raise ConfigurationError naming the field."""
        with pytest.raises(ConfigurationError, match=field):
            ClientPolicy(**kwargs)  # type: ignore[arg-type]

    def test_bad_retry_policy(self) -> None:
        """Unknown status names, negative attempts and NaN timeouts are refused."""
        with pytest.raises(ConfigurationError, match="retry_on"):
            RetryPolicy(retry_on=("5xx",))
        with pytest.raises(ConfigurationError, match="retry_on"):
            RetryPolicy(retry_on=(None,))
        with pytest.raises(ConfigurationError, match="attempts"):
            RetryPolicy(attempts=-1)
        with pytest.raises(ConfigurationError, match="per_try_timeout"):
            RetryPolicy(per_try_timeout=math.nan)
        assert RetryPolicy(retry_on="unavailable").retry_on == {Code.UNAVAILABLE}
        assert ClientPolicy(retries=RetryPolicy(attempts=0))._retry is None

    def test_unknown_status_names_are_not_retried(self) -> None:
        """An RpcStatusError with a code name no status has is simply not retried."""
        from meshkit.grpc._client import _retryable  # noqa: PLC0415

        retryable = _retryable(frozenset({Code.UNAVAILABLE}))
        assert retryable(RpcStatusError("UNAVAILABLE", ""))
        assert not retryable(RpcStatusError("BOGUS", ""))
        assert not retryable(KeyError("x"))


class TestServerAdmission:
    """ServerPolicy.admit."""

    @given(remaining=st.floats(allow_nan=True) | st.none(), header=nasty)
    def test_admit_never_crashes(self, remaining: float | None, header: str) -> None:
        """Any deadline and header text gives an admission (or a meshkit error)."""
        call = IncomingCall(
            method=PATH,
            metadata=(("traceparent", header), ("x-correlation-id", header), ("bin", b"\x00")),
            time_remaining=remaining,
        )
        admission = ServerPolicy(clock=FakeClock()).admit(call)
        assert admission.correlation_id
        if remaining is None or math.isnan(remaining) or remaining >= 1e9:
            assert admission.expires_at is None

    def test_spent_deadline(self, clock: FakeClock) -> None:
        """A deadline already passed is DeadlineExceededError when the handler would start."""
        admission = ServerPolicy(clock=clock).admit(IncomingCall(method=PATH, time_remaining=0))
        with pytest.raises(DeadlineExceededError):
            admission.context()
        live = ServerPolicy(clock=clock).admit(IncomingCall(method=PATH, time_remaining=3))
        assert live.context().run(time_remaining) == 3

    def test_async_enter_leave(self) -> None:
        """enter()/leave() publish and restore the ids."""
        from meshkit.grpc import current_correlation_id  # noqa: PLC0415

        admission = ServerPolicy().admit(IncomingCall(method=PATH))
        tokens = admission.enter()
        assert current_correlation_id() == admission.correlation_id
        admission.leave(tokens)
        assert current_correlation_id() is None
        assert anyio is not None
