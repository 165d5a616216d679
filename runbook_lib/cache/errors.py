"""Typed errors of the cache diagnosis and warming; each carries a hint."""

from __future__ import annotations

from ..errors import RunbookError


class CacheError(RunbookError):
    hint = "check the Redis URL (redis://host:port/db) and that the server answers PING"


class RedisUnavailable(CacheError):
    hint = ("check the Redis URL and password (--password-env NAME names the environment variable "
            "holding it) and that the server is running")


class AppMetricsError(CacheError):
    hint = "check the app metrics URL (its /metrics endpoint) or the Prometheus URL, or leave it out"


class CacheWarmError(CacheError):
    """Warming stopped before it finished. ``summary`` says what was warmed, skipped and failed so far."""

    hint = ("what was warmed so far stays in the cache and expires with its TTL; fix the cause and warm "
            "again (keys already present are skipped)")

    def __init__(self, message: str, summary: dict | None = None, hint: str | None = None):
        super().__init__(message, hint)
        self.summary = summary or {}
