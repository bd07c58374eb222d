"""The knobs of outlier detection, with Envoy's defaults."""

from __future__ import annotations

import attrs

from meshkit._validate import count, finite, ge, in_range, optional, positive_seconds, require
from meshkit.balancing._snapshot import FITS_FLOAT

_SECONDS = [positive_seconds, FITS_FLOAT]

__all__ = ["OutlierConfig"]


@attrs.frozen(kw_only=True)
class OutlierConfig:
    """When `OutlierDetector` ejects an endpoint, and for how long (Envoy `outlier_detection`).

    The defaults are Envoy's (and Istio's `outlierDetection`): five consecutive errors eject,
    the success-rate check runs every 10 s, an ejection lasts 30 s times the number of times
    the endpoint was ejected (at most 300 s), at most 10% of the endpoints are ejected (but
    always at least one), and below 50% healthy endpoints the detector panics and uses all.
    Set a detector to `None` to disable it.

    Attributes:
        consecutive_errors: Consecutive `ERROR`/`GATEWAY_ERROR` outcomes that eject (Envoy
            `consecutive_5xx`); None disables.
        consecutive_gateway_errors: Consecutive `GATEWAY_ERROR` outcomes that eject (Envoy
            `consecutive_gateway_failure`); None (the default, as Envoy does not enforce it
            by default) disables.
        interval: Seconds between evaluations of the success-rate and failure-percentage
            checks; also how often an ejection multiplier decays.
        base_ejection_time: Seconds of the first ejection; the n-th lasts n times as long,
            the multiplier growing no more once it reaches `max_ejection_time`.
        max_ejection_time: Upper bound of one ejection, in seconds (>= base_ejection_time).
        max_ejection_percent: Most endpoints ejected at once, in percent; one endpoint may
            always be ejected, whatever this value.
        success_rate_stdev_factor: An endpoint whose success rate is below
            `mean - factor * stdev` of its peers' is ejected; None disables the check.
        success_rate_minimum_hosts: Endpoints with enough requests needed to run that check.
        success_rate_request_volume: Requests in the interval for an endpoint to count.
        failure_percentage_threshold: An endpoint whose failure percentage in the interval is
            at or above this is ejected; None (the default, as in Envoy) disables the check.
        failure_percentage_minimum_hosts: Endpoints with enough requests to run that check.
        failure_percentage_request_volume: Requests in the interval for an endpoint to count.
        panic_threshold: Below this percentage of healthy endpoints, ejections are ignored
            and every endpoint is used (Envoy's healthy panic threshold); 0 disables.
    """

    consecutive_errors: int | None = attrs.field(default=5, validator=optional(count()))
    consecutive_gateway_errors: int | None = attrs.field(default=None, validator=optional(count()))
    interval: float = attrs.field(default=10.0, validator=_SECONDS)
    base_ejection_time: float = attrs.field(default=30.0, validator=_SECONDS)
    max_ejection_time: float = attrs.field(default=300.0, validator=_SECONDS)
    max_ejection_percent: float = attrs.field(default=10.0, validator=in_range(0, 100))
    success_rate_stdev_factor: float | None = attrs.field(
        default=1.9, validator=optional([finite, ge(0), FITS_FLOAT])
    )
    success_rate_minimum_hosts: int = attrs.field(default=5, validator=count())
    success_rate_request_volume: int = attrs.field(default=100, validator=count())
    failure_percentage_threshold: float | None = attrs.field(
        default=None, validator=optional(in_range(0, 100))
    )
    failure_percentage_minimum_hosts: int = attrs.field(default=5, validator=count())
    failure_percentage_request_volume: int = attrs.field(default=50, validator=count())
    panic_threshold: float = attrs.field(default=50.0, validator=in_range(0, 100))

    def __attrs_post_init__(self) -> None:
        require(
            self.max_ejection_time >= self.base_ejection_time,
            "max_ejection_time",
            self.max_ejection_time,
            f"must be >= base_ejection_time ({self.base_ejection_time})",
        )
