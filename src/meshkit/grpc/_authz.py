"""Istio's AuthorizationPolicy, evaluated in-process for each incoming call.

Istio's semantics, kept as they are: DENY policies are checked first and any match denies;
then, if there is at least one ALLOW policy, the call must match one of them; with no ALLOW
policy, everything not denied is allowed. A rule matches when one of its sources and one of
its operations match (an empty `from_` or `to` matches anything). An ALLOW policy without
rules matches nothing (Istio's "allow-nothing"); a DENY policy without rules denies nothing.

For gRPC, Istio maps a call to the HTTP request `POST /package.Service/Method`, so `methods`
is matched against `"POST"` and `paths` against the full method name. The principal is the
mTLS peer's SPIFFE id without its `spiffe://` scheme (`cluster.local/ns/shop/sa/api`).
Strings match as Istio matches them: exact, `prefix*`, `*suffix`, or `*` (present at all).
"""

from __future__ import annotations

import enum
from typing import final

import attrs

from meshkit._errors import PermissionDeniedError
from meshkit._validate import instance_of
from meshkit.grpc._checks import list_of

__all__ = [
    "Action",
    "AuthorizationPolicy",
    "Operation",
    "Rule",
    "Source",
    "authorize",
    "principal_of",
]

GRPC_HTTP_METHOD = "POST"
"""The HTTP method Istio sees for every gRPC call."""


class Action(enum.Enum):
    """What an `AuthorizationPolicy` does with the calls its rules match."""

    ALLOW = "ALLOW"
    DENY = "DENY"


def _match(pattern: str, value: str | None) -> bool:
    if value is None:
        return False
    if pattern == "*":
        return True
    if pattern.endswith("*"):
        return value.startswith(pattern[:-1])
    if pattern.startswith("*"):
        return value.endswith(pattern[1:])
    return value == pattern


def _matches(patterns: tuple[str, ...], negated: tuple[str, ...], value: str | None) -> bool:
    if patterns and not any(_match(p, value) for p in patterns):
        return False
    return not any(_match(p, value) for p in negated)


@final
@attrs.frozen(kw_only=True)
class Source:
    """Who calls (Istio `rule.from.source`): the caller's mTLS principal.

    Attributes:
        principals: Patterns of allowed principals (`cluster.local/ns/x/sa/y`); empty: any.
        not_principals: Patterns of principals that never match.
    """

    principals: tuple[str, ...] = list_of(str, "principals")
    not_principals: tuple[str, ...] = list_of(str, "not_principals")

    def matches(self, principal: str | None) -> bool:
        """Return whether a caller with `principal` (None: no mTLS identity) matches."""
        return _matches(self.principals, self.not_principals, principal)


@final
@attrs.frozen(kw_only=True)
class Operation:
    """What is called (Istio `rule.to.operation`).

    Attributes:
        methods: HTTP methods; every gRPC call is `POST`.
        not_methods: Methods that never match.
        paths: Patterns of `/package.Service/Method` paths; empty: any.
        not_paths: Paths that never match.
    """

    methods: tuple[str, ...] = list_of(str, "methods")
    not_methods: tuple[str, ...] = list_of(str, "not_methods")
    paths: tuple[str, ...] = list_of(str, "paths")
    not_paths: tuple[str, ...] = list_of(str, "not_paths")

    def matches(self, path: str) -> bool:
        """Return whether a gRPC call to `path` matches."""
        method_ok = _matches(self.methods, self.not_methods, GRPC_HTTP_METHOD)
        return method_ok and _matches(self.paths, self.not_paths, path)


@final
@attrs.frozen(kw_only=True)
class Rule:
    """One rule: some source and some operation must match (empty lists match anything).

    Attributes:
        sources: Istio's `from` list.
        operations: Istio's `to` list.
        unenforced: Paths of the rule's conditions meshkit cannot evaluate (`when`, ...); a
            rule with any never allows and denies without them (see the module docstring).
    """

    sources: tuple[Source, ...] = list_of(Source, "sources")
    operations: tuple[Operation, ...] = list_of(Operation, "operations")
    unenforced: tuple[str, ...] = list_of(str, "unenforced")

    def matches(self, principal: str | None, path: str) -> bool:
        """Return whether the call matches this rule."""
        source_ok = not self.sources or any(s.matches(principal) for s in self.sources)
        return source_ok and (not self.operations or any(o.matches(path) for o in self.operations))


@final
@attrs.frozen(kw_only=True)
class AuthorizationPolicy:
    """Istio's AuthorizationPolicy for one workload.

    Attributes:
        name: The policy's name (for logs and errors).
        action: ALLOW or DENY.
        rules: The rules; see the module docstring for what an empty list means.
    """

    name: str = attrs.field(default="policy", validator=instance_of(str))
    action: Action = attrs.field(default=Action.ALLOW, validator=instance_of(Action))
    rules: tuple[Rule, ...] = list_of(Rule, "rules")

    def matches(self, principal: str | None, path: str) -> bool:
        """Return whether one of the rules matches the call (failing closed, see `Rule`)."""
        deny = self.action is Action.DENY
        return any(
            rule.matches(principal, path) for rule in self.rules if deny or not rule.unenforced
        )


def authorize(policies: tuple[AuthorizationPolicy, ...], principal: str | None, path: str) -> None:
    """Check a call against the policies, as Istio does.

    Raises:
        PermissionDeniedError: If a DENY policy matches, or ALLOW policies exist and none
            matches.
    """
    allows = False
    allowed = False
    for policy in policies:
        if policy.action is Action.DENY:
            if policy.matches(principal, path):
                raise PermissionDeniedError(principal or "", path)
        else:
            allows = True
            allowed = allowed or policy.matches(principal, path)
    if allows and not allowed:
        raise PermissionDeniedError(principal or "", path)


def principal_of(spiffe_id: str | None) -> str | None:
    """Return Istio's principal for a SPIFFE id: the id without `spiffe://`, or None."""
    if not spiffe_id or not spiffe_id.startswith("spiffe://"):
        return None
    return spiffe_id.removeprefix("spiffe://")
