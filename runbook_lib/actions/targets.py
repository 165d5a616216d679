"""Connections to the systems actions change, opened from Settings only when first needed.

* PostgreSQL: one autocommit connection (``CREATE INDEX CONCURRENTLY`` cannot run in a transaction);
  the password comes from the SecretRef and is passed as the ``password=`` keyword, never put in a DSN.
* Redis: one client; the password likewise from the SecretRef.

``endpoint(family)`` describes where a change goes (host:port/db) without any credential; it is
recorded in every audit line and checked again before a rollback.
"""

from __future__ import annotations

from typing import Any, Self

import psycopg
import redis

from runbook_lib.actions.action_errors import TargetError
from runbook_lib.errors import TargetUnreachable
from runbook_lib.redaction import postgres_endpoint, redact_text, redis_endpoint
from runbook_lib.settings import Settings

# Bounded connects: a server that does not answer in this many seconds is reported, not waited on.
CONNECT_TIMEOUT_S = 10
# Redis commands used here (CONFIG GET/SET) answer in microseconds; 10 s means the server is stuck.
REDIS_SOCKET_TIMEOUT_S = 10
APPLICATION_NAME = "runbook-remediation"


def app_endpoint(settings) -> str:
    """Where an ``app`` family change goes, for the audit lines (``Targets.endpoint("app")``)."""
    where = settings.app.knobs_target()
    if not where:
        return "app config: (the parameters name no app.config_file, app.admin_url or app.configmap)"
    if where["via"] == "configmap":
        return f"app config: ConfigMap {where['configmap']} (planned only)"
    return f"app config: {where.get('config_file') or where.get('admin_url')}"


class Targets:
    """Lazily opened connections for one run. Use as a context manager; ``close()`` closes all."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._pg: psycopg.Connection | None = None
        self._redis: redis.Redis | None = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def endpoint(self, family: str) -> str:
        if family == "postgres":
            return postgres_endpoint(self._pg_settings().dsn)
        if family == "redis":
            return redis_endpoint(self._redis_settings().url)
        if family == "app":
            return app_endpoint(self.settings)
        if family == "aws":
            aws = self.settings.aws
            return f"aws autoscaling {aws.region}" + (f" at {aws.endpoint_url}" if aws and aws.endpoint_url else "") \
                if aws else "aws (no aws section in the parameters)"
        raise TargetError(f"unknown target family {family!r}")

    def _pg_settings(self):
        if self.settings.postgres is None:
            raise TargetError("this action needs PostgreSQL but the parameters have no postgres section")
        return self.settings.postgres

    def _redis_settings(self):
        if self.settings.redis is None:
            raise TargetError("this action needs Redis but the parameters have no redis section")
        return self.settings.redis

    def postgres(self) -> psycopg.Connection:
        if self._pg is None or self._pg.closed:
            cfg = self._pg_settings()
            kwargs: dict[str, Any] = {"autocommit": True, "connect_timeout": CONNECT_TIMEOUT_S,
                                      "application_name": APPLICATION_NAME}
            if cfg.password is not None:
                kwargs["password"] = cfg.password.reveal().get_secret_value()
            try:
                self._pg = psycopg.connect(cfg.dsn, **kwargs)
            except psycopg.Error as e:
                raise TargetUnreachable(self.endpoint("postgres"), f"cannot connect to {self.endpoint('postgres')}: "
                                  f"{redact_text(str(e).strip().splitlines()[0] if str(e) else type(e).__name__)}"
                                  ) from None
        return self._pg

    def redis(self) -> redis.Redis:
        if self._redis is None:
            cfg = self._redis_settings()
            password = cfg.password.reveal().get_secret_value() if cfg.password is not None else None
            client = redis.Redis.from_url(cfg.url, password=password, socket_timeout=REDIS_SOCKET_TIMEOUT_S,
                                          socket_connect_timeout=CONNECT_TIMEOUT_S, decode_responses=True)
            try:
                client.ping()
            except redis.RedisError as e:
                client.close()
                raise TargetUnreachable(self.endpoint("redis"), f"cannot connect to {self.endpoint('redis')}: {redact_text(str(e))}") from None
            self._redis = client
        return self._redis

    def aws_client(self, service: str):
        """A boto3 client of ``service`` ("autoscaling", "application-autoscaling", ...) for the parameters'
        ``aws`` section, one per service per run (boto3 imported here: it costs a second and only scaling
        actions need it)."""
        clients = self.__dict__.setdefault("_aws_clients", {})
        if service not in clients:
            if self.settings.aws is None:
                raise TargetError("this action needs AWS but the parameters have no aws section",
                                  hint="add aws: {region: ..., endpoint_url: ... (moto only)}")
            import boto3
            from botocore.config import Config

            cfg = Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=CONNECT_TIMEOUT_S,
                         read_timeout=30)
            session = boto3.session.Session(region_name=self.settings.aws.region)
            clients[service] = session.client(service, endpoint_url=self.settings.aws.endpoint_url or None, config=cfg)
        return clients[service]

    def autoscaling(self):
        """The EC2 Auto Scaling client."""
        return self.aws_client("autoscaling")

    def close(self) -> None:
        if self._pg is not None:
            self._pg.close()
            self._pg = None
        if self._redis is not None:
            self._redis.close()
            self._redis = None
