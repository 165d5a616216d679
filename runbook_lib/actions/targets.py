"""Connections to the systems actions change, opened from Settings only when first needed.

* PostgreSQL: one autocommit connection (``CREATE INDEX CONCURRENTLY`` cannot run in a transaction);
  the password comes from the SecretRef and is passed as the ``password=`` keyword, never put in a DSN.
* Redis: one client; the password likewise from the SecretRef.
* Kubernetes: one ``kubernetes.client.ApiClient`` from the kubeconfig (its credentials stay in that file).

``endpoint(family)`` describes where a change goes (host:port/db) without any credential; it is
recorded in every audit line and checked again before a rollback.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Self
from urllib.parse import urlsplit

import psycopg
import redis
import yaml

from runbook_lib.actions.action_errors import TargetError
from runbook_lib.errors import TargetUnreachable
from runbook_lib.redaction import postgres_endpoint, redact_text, redis_endpoint, register_secret
from runbook_lib.settings import Settings, resolve_path

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


# Where the kubeconfig is when the parameters name none: kubectl's order (the first file of $KUBECONFIG, then
# ~/.kube/config); a merged multi-file $KUBECONFIG is not supported here.
KUBECONFIG_DEFAULT = "~/.kube/config"
KUBE_HINT = ("check kubernetes.kubeconfig / kubernetes.context in the parameters (the file, its context, its "
             "server) and that the credentials are current")


def kubeconfig_path(settings) -> Path:
    """The kubeconfig the Kubernetes actions use (``kubernetes.kubeconfig``, else $KUBECONFIG's first file)."""
    cfg = settings.kubernetes
    if cfg is not None and cfg.kubeconfig:
        return resolve_path(cfg.kubeconfig)
    first = (os.environ.get("KUBECONFIG") or "").split(os.pathsep)[0]
    return Path(first or KUBECONFIG_DEFAULT).expanduser()


def kubernetes_endpoint(settings) -> str:
    """Where a ``kubernetes`` family change goes: the context's API server URL (no user-info, no query) and the
    context, read from the kubeconfig without connecting and without any credential."""
    if settings.kubernetes is None:
        raise TargetError("this action needs Kubernetes but the parameters have no kubernetes section")
    path, ctx_name = kubeconfig_path(settings), settings.kubernetes.context
    try:
        doc = yaml.safe_load(path.read_text()) or {}
        ctx_name = ctx_name or doc.get("current-context")
        ctx = next(c["context"] for c in doc.get("contexts") or [] if c.get("name") == ctx_name)
        server = next(c["cluster"]["server"] for c in doc.get("clusters") or [] if c.get("name") == ctx["cluster"])
    except (OSError, yaml.YAMLError) as e:
        raise TargetError(f"kubeconfig {path} cannot be read: {getattr(e, 'strerror', None) or e}",
                          hint=KUBE_HINT) from None
    except (StopIteration, KeyError, TypeError, AttributeError):
        raise TargetError(f"kubeconfig {path} has no context {ctx_name!r} with a cluster server",
                          hint=KUBE_HINT) from None
    parts = urlsplit(str(server))
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    netloc += f":{parts.port}" if parts.port else ""
    return f"kubernetes {parts.scheme}://{netloc}{parts.path.rstrip('/')} context {ctx_name}"


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
        if family == "kubernetes":
            return kubernetes_endpoint(self.settings)
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

    def kubernetes(self):
        """A ``kubernetes.client.ApiClient`` for the parameters' kubeconfig and context, one per run (the client is
        imported here: it takes seconds and only the Kubernetes actions need it). The kubeconfig's bearer token
        is registered with the redaction, so an error quoting it is masked."""
        if getattr(self, "_kube", None) is None:
            from kubernetes import client, config

            path, context = kubeconfig_path(self.settings), self._kube_settings().context
            cfg = client.Configuration()
            try:
                config.load_kube_config(config_file=str(path), context=context, client_configuration=cfg,
                                        persist_config=False)
            except (config.ConfigException, OSError, yaml.YAMLError) as e:
                raise TargetError(f"kubeconfig {path}: {redact_text(str(e).strip() or type(e).__name__)}",
                                  hint=KUBE_HINT) from None
            for value in (cfg.api_key or {}).values():  # {"BearerToken": "Bearer <token>"}
                register_secret(str(value).removeprefix("Bearer ").strip())
            self._kube = client.ApiClient(cfg)
        return self._kube

    def _kube_settings(self):
        if self.settings.kubernetes is None:
            raise TargetError("this action needs Kubernetes but the parameters have no kubernetes section",
                              hint="add kubernetes: {kubeconfig: ..., context: ..., namespace: ..., deployment: ...}")
        return self.settings.kubernetes

    def close(self) -> None:
        if self._pg is not None:
            self._pg.close()
            self._pg = None
        if self._redis is not None:
            self._redis.close()
            self._redis = None
        if getattr(self, "_kube", None) is not None:
            self._kube.close()
            self._kube = None
