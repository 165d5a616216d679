"""Typed errors of the lab; each says what to do next."""

from __future__ import annotations

from runbook_lib.errors import RunbookError


class LabError(RunbookError):
    hint = "run 'runbook lab status' to see what runs; 'runbook lab down' cleans up after a crash"


class LabNotRunning(LabError):
    hint = "start it with 'runbook lab up'"


class LabConfigError(LabError):
    hint = ("knobs: cache_ttl_s, cache_key_scheme, db_pool_max, db_pool_timeout_s, orders_query, replicas, "
            "rate_limit_rps, rate_limit_burst, breaker_error_ratio, breaker_window_s, breaker_min_requests, "
            "breaker_open_s")


class LoadTargetError(LabError):
    hint = "the load generator only targets loopback addresses (127.0.0.1, ::1, localhost)"


class ServiceError(LabError):
    hint = "see the server's log file named in the message"
