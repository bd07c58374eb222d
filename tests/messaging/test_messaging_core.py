"""The pure delivery core: policy validation, backoff, the Attempts machine, lanes."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from meshkit import ConfigurationError
from meshkit.messaging import DeliveryPolicy
from meshkit.messaging._core import Attempts, DeadLetterIt, Handle, RetryLater, lane_of

policies = st.builds(
    DeliveryPolicy,
    max_deliveries=st.none() | st.integers(1, 20),
    backoff_initial=st.floats(0, 10),
    backoff_max=st.floats(0, 100),
)


class TestDeliveryPolicy:
    @pytest.mark.parametrize(
        ("field", "value"),
        [
            ("max_deliveries", 0),
            ("max_deliveries", -1),
            ("max_deliveries", 1.5),
            ("max_deliveries", True),
            ("backoff_initial", float("nan")),
            ("backoff_initial", -0.1),
            ("backoff_max", float("inf")),
        ],
    )
    def test_bad_values_name_the_field(self, field: str, value: object) -> None:
        """A bad knob is a ConfigurationError naming it."""
        with pytest.raises(ConfigurationError) as caught:
            DeliveryPolicy(**{field: value})  # type: ignore[arg-type]
        assert caught.value.field == field

    @given(policies, st.integers(1, 10**6))
    def test_backoff_is_capped_and_grows(self, policy: DeliveryPolicy, failures: int) -> None:
        """The backoff never exceeds its cap, never shrinks, and survives huge counts."""
        delay = policy.backoff(failures)
        assert math.isfinite(delay)
        assert 0 <= delay <= policy.backoff_max
        assert policy.backoff(failures + 1) >= delay


class TestAttemptsStart:
    def test_undecodable_is_dead_lettered_at_once(self) -> None:
        """A decode error dead-letters without a handler call, naming the reason."""
        decision = Attempts(DeliveryPolicy(), 1).start("bad bytes")
        assert decision == DeadLetterIt("undecodable message: bad bytes")

    def test_poison_message_past_the_limit_is_dead_lettered(self) -> None:
        """A message delivered more often than allowed (crashes) is not tried again."""
        decision = Attempts(DeliveryPolicy(max_deliveries=3), 4).start(None)
        assert isinstance(decision, DeadLetterIt)
        assert "4 times" in decision.reason

    def test_fresh_message_is_handled(self) -> None:
        """A decodable message within the limit is handed to the handler."""
        assert Attempts(DeliveryPolicy(max_deliveries=None), 1000).start(None) == Handle()

    def test_delivered_must_be_positive(self) -> None:
        """A delivery count below 1 is refused."""
        with pytest.raises(ConfigurationError):
            Attempts(DeliveryPolicy(), 0)


class AttemptsMachine(RuleBasedStateMachine):
    """Drive Attempts through failures and compare with a plain model."""

    @initialize(policy=policies, delivered=st.integers(1, 5))
    def start(self, policy: DeliveryPolicy, delivered: int) -> None:
        self.policy = policy
        self.delivered = delivered
        self.attempts = Attempts(policy, delivered)
        self.failures = 0
        self.dead = False

    @rule(error=st.text(max_size=5))
    def fail(self, error: str) -> None:
        if self.dead:
            return
        decision = self.attempts.failed(error)
        self.failures += 1
        charged = self.delivered - 1 + self.failures
        limit = self.policy.max_deliveries
        if limit is not None and charged >= limit:
            assert isinstance(decision, DeadLetterIt)
            assert error in decision.reason
            self.dead = True
        else:
            assert decision == RetryLater(self.policy.backoff(self.failures))

    @invariant()
    def charged_attempts_match(self) -> None:
        if hasattr(self, "attempts"):
            assert self.attempts.attempts == self.delivered - 1 + self.failures

    @invariant()
    def never_more_attempts_than_allowed(self) -> None:
        limit = getattr(self, "policy", DeliveryPolicy()).max_deliveries
        if hasattr(self, "attempts") and limit is not None and self.delivered <= limit:
            assert self.attempts.attempts <= limit


TestAttemptsMachine = AttemptsMachine.TestCase


class TestLanes:
    @given(st.text(), st.integers(1, 64))
    def test_a_key_always_maps_to_the_same_lane(self, key: str, lanes: int) -> None:
        """lane_of is deterministic and within range, lone surrogates included."""
        lane = lane_of(key, lanes)
        assert 0 <= lane < lanes
        assert lane_of(key, lanes) == lane

    def test_keys_spread_over_lanes(self) -> None:
        """Many keys use every lane."""
        assert {lane_of(f"order-{n}", 8) for n in range(200)} == set(range(8))
