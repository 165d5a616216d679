"""The parameters model: one validated pydantic model for every run.

A parameters file (``parameters/*.yaml``) is validated here before anything runs. Unknown keys,
wrong types and missing fields stop the run with one line naming the file and the field.

Secrets are never written into the YAML: a password or token is a ``SecretRef`` naming an
environment variable or a file, resolved only when a connection is opened. A DSN or URL that
carries a password inline is refused.
"""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import parse_qsl, urlsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from runbook_lib.errors import SecretError, SettingsError
from runbook_lib.redaction import register_secret
from runbook_lib.signal_catalog import CATALOG, DEFAULT_SIGNALS, PRIMARY_SIGNAL


def project_root() -> Path:
    """Where ``parameters/``, ``fixtures/`` and ``runs/`` live: $RUNBOOK_HOME or the source checkout."""
    env = os.environ.get("RUNBOOK_HOME")
    return Path(env).resolve() if env else Path(__file__).resolve().parent.parent


# A title is a line in a postmortem's heading and a chart's caption.
MAX_TITLE_CHARS = 300

# ``${NAME}`` or ``${NAME:-default}`` in a path parameter: the same syntax as a POSIX shell, so a parameters
# file can point at a folder another tool chose (the lab's state folder is ``$RUNBOOK_LAB_DIR``).
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_env(text: str) -> str:
    """``${NAME}`` / ``${NAME:-default}`` replaced from the environment; an unset NAME without a default is an
    error naming it (a path silently missing a folder would point somewhere else)."""

    def one(m: re.Match) -> str:
        value = os.environ.get(m.group(1))
        if value:
            return value
        if m.group(2) is not None:
            return m.group(2)
        raise SettingsError(f"{text!r} names ${{{m.group(1)}}}, which is not set",
                            hint=f"export {m.group(1)}=... or write ${{{m.group(1)}:-default}} in the parameters")

    return _ENV_REF.sub(one, text)


def resolve_path(p: str | Path) -> Path:
    """Relative paths in parameters are relative to the project root, wherever the kernel runs;
    ``${NAME:-default}`` is taken from the environment (``expand_env``)."""
    p = Path(expand_env(str(p))).expanduser()
    return p if p.is_absolute() else project_root() / p


# The cache is sized for the SLO's hit ratio plus this margin: a one-minute window of the lab's traffic
# has about +/-2 points of sampling noise (benchmarks/cache_recovery.py), so a cache sized exactly for
# 0.80 would read under its SLO half of the time; 0.80 + 0.05 is issue 6's 85%.
CACHE_TARGET_MARGIN = 0.05
MAX_CACHE_TARGET = 0.99


# Signals every run needs: the primary one finds the incident window (01), the request rate turns statement
# counts into calls per request (02: N+1).
REQUIRED_SIGNALS = (PRIMARY_SIGNAL, "request_rate")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SecretRef(_Model):
    """Where a secret comes from: ``{env: NAME}`` or ``{file: /path}``. The value itself never is here."""

    env: str | None = None
    file: str | None = None

    @model_validator(mode="after")
    def _one_source(self):
        if bool(self.env) == bool(self.file):
            raise ValueError("a secret reference needs exactly one of 'env' or 'file'")
        return self

    def reveal(self) -> SecretStr:
        if self.env:
            value = os.environ.get(self.env)
            if value is None:
                raise SecretError(f"environment variable {self.env} is not set")
            register_secret(value)
            return SecretStr(value)
        path = resolve_path(self.file)  # type: ignore[arg-type]
        try:
            value = path.read_text().strip()
            register_secret(value)
            return SecretStr(value)
        except OSError as e:
            raise SecretError(f"secret file {self.file} cannot be read: {e.strerror}") from None

    def describe(self) -> str:
        return f"env:{self.env}" if self.env else f"file:{self.file}"


class Incident(_Model):
    id: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,62}$")]
    title: str = Field(min_length=1, max_length=MAX_TITLE_CHARS)
    service: str = Field("api", min_length=1, max_length=MAX_TITLE_CHARS)
    severity: Literal["sev1", "sev2", "sev3", "sev4"] = "sev2"


class FixtureSource(_Model):
    kind: Literal["fixture"]
    bundle: str = Field(description="folder of the incident bundle, relative to the project root")


class PrometheusSource(_Model):
    kind: Literal["prometheus"]
    url: str
    queries: dict[str, str] = Field(description="signal name -> PromQL returning one series")
    bearer_token: SecretRef | None = None
    timeout_s: float = Field(30.0, gt=0)
    verify_tls: bool = True
    events_file: str | None = Field(None, description="JSON Lines of {time, label, kind} drawn as chart markers "
                                                      "(a deploy log); ${NAME:-default} is read from the environment")

    @field_validator("url")
    @classmethod
    def _no_inline_credentials(cls, v: str) -> str:
        return _refuse_inline_password(v, "source.bearer_token")

    @field_validator("queries")
    @classmethod
    def _known_signals(cls, v: dict[str, str]) -> dict[str, str]:
        _check_signal_names(v.keys())
        return v


class CloudWatchMetric(_Model):
    namespace: str = "AWS/RDS"
    metric: str
    dimensions: dict[str, str] = {}
    stat: str = "Average"
    scale: float = Field(1.0, description="multiply the value, e.g. 100 -> ratio for CPUUtilization percent: 0.01")


class CloudWatchSource(_Model):
    kind: Literal["cloudwatch"]
    region: str = "us-east-1"
    endpoint_url: str | None = Field(None, description="e.g. a moto server; empty for real AWS")
    metrics: dict[str, CloudWatchMetric]

    @field_validator("metrics")
    @classmethod
    def _known_signals(cls, v):
        _check_signal_names(v.keys())
        return v


Source = Annotated[FixtureSource | PrometheusSource | CloudWatchSource, Field(discriminator="kind")]


class Window(_Model):
    """The analysis range. For a fixture bundle it defaults to the whole bundle."""

    start: datetime | None = None
    end: datetime | None = None
    last: str | None = Field(None, pattern=r"^\d+[smhd]$", description="instead of start/end: e.g. '3h' before now")
    step_seconds: int = Field(30, ge=1, le=3600)
    start_at_event: str | None = Field(None, description="without start/last: start at the last event with this "
                                                         "label in source.events_file, end now")

    @field_validator("start", "end")
    @classmethod
    def _utc(cls, v: datetime | None):
        if v is not None and v.tzinfo is None:
            v = v.replace(tzinfo=UTC)
        return v

    @model_validator(mode="after")
    def _order(self):
        if self.start and self.end and self.end <= self.start:
            raise ValueError("window.end must be after window.start")
        if self.last and (self.start or self.end):
            raise ValueError("give either window.last or window.start/end, not both")
        if self.start_at_event is not None and (self.start or self.last):
            raise ValueError("give either window.start_at_event or window.start/last, not both")
        return self


class Slo(_Model):
    latency_p95_ms: float = Field(100.0, gt=0)
    error_ratio: float = Field(0.01, ge=0, le=1)
    cache_hit_ratio: float = Field(0.80, ge=0, le=1)

    def targets(self) -> dict[str, float]:
        """The SLO by signal name: what the charts draw as dotted lines and the validation checks."""
        return {"latency_p95_ms": self.latency_p95_ms, "error_ratio": self.error_ratio,
                "cache_hit_ratio": self.cache_hit_ratio}

    def cache_sizing_target(self) -> float:
        """The hit ratio the cache is sized for: the SLO's plus CACHE_TARGET_MARGIN (capped)."""
        return min(self.cache_hit_ratio + CACHE_TARGET_MARGIN, MAX_CACHE_TARGET)


class App(_Model):
    """The application under repair, for the ``app.config`` and ``cache.warm`` actions and the evidence.

    Where its knobs live (``app.config`` changes them there; the first one given wins unless ``config_via``
    says which): ``config_file``, a JSON object of knobs the app re-reads (a file on this host or a mounted
    volume, the lab's config.json); ``admin_url``, an HTTP admin endpoint answering GET with the knobs as a
    JSON object and accepting a PATCH with a JSON merge body (``admin_token``: its bearer token, a secret
    reference); ``configmap``, a Kubernetes ConfigMap ``namespace/name`` (planned only: no cluster here).
    ``base_url``: where cache warming fetches the pages that fill keys; ``warm_routes``: which page fills which
    key family (``{"api:users:{id}": "/users/{id}"}``; without it, the lab's key scheme)."""

    config_file: str | None = Field(None, description="JSON file of the app's knobs; ${NAME:-default} allowed")
    admin_url: str | None = Field(None, description="HTTP admin endpoint of the app's knobs (GET/PATCH JSON)")
    admin_token: SecretRef | None = None
    configmap: str | None = Field(None, description="namespace/name of the ConfigMap holding the knobs")
    config_via: Literal["file", "http", "configmap"] | None = None
    base_url: str | None = Field(None, description="the app's base URL, e.g. http://127.0.0.1:18080")
    warm_routes: dict[str, str] | None = Field(None, description="key family -> path that fills it")

    @field_validator("base_url", "admin_url")
    @classmethod
    def _no_inline_credentials(cls, v: str | None) -> str | None:
        return v if v is None else _refuse_inline_password(v, "a header the app accepts")

    @model_validator(mode="after")
    def _via_has_its_target(self):
        need = {"file": self.config_file, "http": self.admin_url, "configmap": self.configmap}
        if self.config_via and not need[self.config_via]:
            field = {"file": "config_file", "http": "admin_url", "configmap": "configmap"}[self.config_via]
            raise ValueError(f"config_via {self.config_via} needs app.{field}")
        return self

    def knobs_target(self) -> dict[str, str]:
        """Where ``app.config`` changes the knobs, as that action's inputs (empty: the parameters name none)."""
        via = self.config_via or next((v for v, t in (("file", self.config_file), ("http", self.admin_url),
                                                      ("configmap", self.configmap)) if t), None)
        if via is None:
            return {}
        return {"via": via, **{"file": {"config_file": self.config_file}, "http": {"admin_url": self.admin_url},
                               "configmap": {"configmap": self.configmap}}[via]}


# Values that fill an approval field without approving anything: a change ticket "TBD" is no ticket.
APPROVAL_PLACEHOLDERS = frozenset({"tbd", "todo", "tba", "n/a", "na", "none", "null", "-", "--", "?", "x", "xx", "xxx",
                                   "changeme", "change-me", "placeholder", "unknown", "nobody", "anyone", "fixme"})


def approval_problem(value: str | None) -> str | None:
    """Why ``value`` is not a real approval (approver or change ticket); None when it is one or is absent."""
    if value is None:
        return None
    if not value.strip():
        return "is blank"
    if value.strip().lower() in APPROVAL_PLACEHOLDERS:
        return f"is a placeholder ({value.strip()!r})"
    return None


class ExtraAction(_Model):
    """An action the operator adds to the plan by hand (an executor kind and its inputs), planned, approved,
    applied, measured and audited like the runbook's own."""

    kind: str
    inputs: dict[str, Any] = Field(default_factory=dict)
    why: str = "added by the operator (remediation.extra_actions)"


class Remediation(_Model):
    apply: bool = False
    approved_by: str | None = None
    change_ticket: str | None = None
    auto_rollback: bool = False
    extra_actions: list[ExtraAction] = Field(default_factory=list, max_length=20)

    @field_validator("approved_by", "change_ticket")
    @classmethod
    def _real_approval(cls, v: str | None) -> str | None:
        problem = approval_problem(v)
        if problem:
            raise ValueError(f"{problem}: name the approver / the change ticket, or leave it out for a dry run")
        return v.strip() if v is not None else v


class Postgres(_Model):
    dsn: str = Field(description="libpq DSN or URL without a password")
    password: SecretRef | None = None

    @field_validator("dsn")
    @classmethod
    def _no_inline_password(cls, v: str) -> str:
        return _refuse_inline_password(v, "postgres.password")


class Redis(_Model):
    url: str
    password: SecretRef | None = None

    @field_validator("url")
    @classmethod
    def _no_inline_password(cls, v: str) -> str:
        return _refuse_inline_password(v, "redis.password")


class Aws(_Model):
    """Where the AWS actions go (EC2 Auto Scaling). Credentials come from the usual AWS chain (AWS_PROFILE,
    instance role, environment), never from this file; ``endpoint_url`` only for a moto server."""

    region: str = Field("us-east-1", min_length=1)
    endpoint_url: str | None = None

    @field_validator("endpoint_url")
    @classmethod
    def _no_inline_credentials(cls, v: str | None) -> str | None:
        return v if v is None else _refuse_inline_password(v, "the AWS credential chain")


# Kubernetes object names: a namespace is a DNS-1123 label, a Deployment name a DNS-1123 subdomain
# (kubernetes.io/docs/concepts/overview/working-with-objects/names).
K8S_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
K8S_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"


class Kubernetes(_Model):
    """Where the Kubernetes actions go (server-side apply of an HPA or a KEDA ScaledObject) and what the generated
    autoscalers scale (``plan.autoscaler_manifests``). Credentials stay in the kubeconfig (a token, a client
    certificate or an exec plugin), never in this file; KEDA's PostgreSQL trigger reads its credentials through a
    ``TriggerAuthentication`` object named here, never a password inline."""

    kubeconfig: str | None = Field(None, description="kubeconfig path; ${NAME:-default} allowed; empty: the first "
                                                     "file of $KUBECONFIG, then ~/.kube/config")
    context: str | None = Field(None, description="kubeconfig context; empty: its current-context")
    namespace: str = Field(max_length=63, pattern=K8S_LABEL)
    deployment: str = Field(max_length=253, pattern=K8S_SUBDOMAIN, description="the Deployment the autoscaler scales")
    prometheus_url: str | None = Field(None, description="Prometheus address KEDA's prometheus triggers query "
                                                         "(as seen from inside the cluster)")
    p95_query: str = Field('histogram_quantile(0.95, sum by (le) (rate(http_request_duration_seconds_bucket'
                           '{job="api"}[1m]))) * 1000', min_length=1,
                           description="PromQL of the service's p95 latency in ms (KEDA trigger)")
    request_rate_query: str = Field('sum(rate(http_requests_total{job="api"}[1m]))', min_length=1,
                                    description="PromQL of the service's total request rate per second (KEDA trigger)")
    p95_metric_name: str = Field("http_request_duration_p95_ms", min_length=1,
                                 description="per-pod p95 metric the HPA reads from custom.metrics.k8s.io "
                                             "(served by prometheus-adapter)")
    postgres_trigger_auth: str | None = Field(None, max_length=253, pattern=K8S_SUBDOMAIN,
                                              description="KEDA TriggerAuthentication holding the PostgreSQL "
                                                          "connection; empty: no postgresql trigger")
    postgres_query: str | None = Field(None, description="SQL of the KEDA postgresql trigger; empty: the app's "
                                                         "active sessions (plan.autoscaler_manifests)")

    @field_validator("prometheus_url")
    @classmethod
    def _no_inline_credentials(cls, v: str | None) -> str | None:
        return v if v is None else _refuse_inline_password(v, "a KEDA TriggerAuthentication")


class AlertMetricsSection(_Model):
    """The service's raw metric names, for the alert rules the validation writes (``validate.alert_rules``; its
    ``AlertMetrics`` checks the names). The signal queries above are whole PromQL expressions; burn-rate alerts
    need the counters and the histogram themselves."""

    requests_total: str = Field(description="request counter, e.g. http_request_duration_seconds_count")
    status_label: str = "status"
    error_status_regex: str = "5.."
    latency_histogram: str = Field(description="histogram base name: <name>_bucket / <name>_count, in seconds")
    latency_buckets: tuple[float, ...] | None = Field(None, description="its bucket bounds in seconds")
    cache_hits_total: str
    cache_misses_total: str
    pool_in_use: str
    pool_max: str
    selector: str = Field("", description='label matchers without braces, e.g. job="api"')


class Settings(_Model):
    incident: Incident
    mode: Literal["fixture", "lab", "live"] = "fixture"
    source: Source
    window: Window = Window()
    signals: list[str] = list(DEFAULT_SIGNALS)
    slo: Slo = Slo()
    remediation: Remediation = Remediation()
    postgres: Postgres | None = None
    redis: Redis | None = None
    app: App = App()
    aws: Aws | None = None
    kubernetes: Kubernetes | None = None
    alert_metrics: AlertMetricsSection | None = None

    @field_validator("signals")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        _check_signal_names(v)
        if len(set(v)) != len(v):
            raise ValueError("a signal is listed twice")
        missing = [s for s in REQUIRED_SIGNALS if s not in v]
        if missing:
            raise ValueError(f"the analysis needs {', '.join(missing)} (add {'it' if len(missing) == 1 else 'them'})")
        return v

    @model_validator(mode="after")
    def _fixture_mode_changes_nothing(self):
        if self.mode == "fixture" and self.remediation.apply:
            raise ValueError("mode fixture with remediation.apply: true: a recorded bundle has no servers to "
                             "change (use mode: lab or live, or leave apply out)")
        return self

    @model_validator(mode="after")
    def _live_needs_approval(self):
        if self.mode == "live" and self.remediation.apply:
            if not (self.remediation.approved_by and self.remediation.change_ticket):
                raise ValueError("live mode with remediation.apply: true needs remediation.approved_by "
                                 "and remediation.change_ticket")
        return self

    @model_validator(mode="after")
    def _event_start_needs_events(self):
        if self.window.start_at_event is not None and not getattr(self.source, "events_file", None):
            raise ValueError("window.start_at_event needs source.events_file (a Prometheus source's event log)")
        return self

    @model_validator(mode="after")
    def _signals_have_a_query(self):
        src = self.source
        mapping = getattr(src, "queries", None) or getattr(src, "metrics", None)
        if mapping is not None:
            missing = [s for s in self.signals if s not in mapping]
            if missing:
                raise ValueError(f"signals {missing} have no query in source.{'queries' if src.kind == 'prometheus' else 'metrics'}")
        return self


def _check_signal_names(names) -> None:
    unknown = [n for n in names if n not in CATALOG]
    if unknown:
        raise ValueError(f"unknown signal {', '.join(map(repr, unknown))}; known: {', '.join(CATALOG)}")


# Query-string parameters that carry a credential (libpq and redis-py read ``password`` from the query; the
# rest are what HTTP APIs and proxies use). A URL carrying one of them is refused like ``user:pass@``.
CREDENTIAL_PARAMS = frozenset({"password", "passwd", "pwd", "pass", "secret", "token", "access_token", "auth",
                               "api_key", "apikey", "access_key", "sslpassword"})


def credential_in(text: str) -> str | None:
    """Where ``text`` (a URL, or a libpq ``key=value`` DSN) carries a credential, in words; None when it does not.

    One policy for every connection string in the parameters: user-info (``user:pass@``), a credential in the
    query string (``?password=...``), a libpq ``password=`` in any position."""
    if "://" in text:
        try:
            parts = urlsplit(text)
            if parts.password:
                return "user-info (user:password@)"
            keys = {k.lower() for k, _ in parse_qsl(parts.query, keep_blank_values=True)}
        except ValueError as e:
            raise ValueError(f"not a URL: {e}") from None
        found = sorted(keys & CREDENTIAL_PARAMS)
        return f"query parameter {found[0]!r}" if found else None
    if re.search(r"(^|\s)(password|sslpassword)\s*=", text, re.IGNORECASE):
        return "a password= keyword"
    return None


def _refuse_inline_password(url: str, field: str) -> str:
    where = credential_in(url)
    if where:
        # worded so that the redaction of the message leaves it readable (no "password:" before the advice)
        raise ValueError(f"the connection string carries a credential ({where}); give it as {field} with "
                         "{env: NAME} or {file: PATH} instead")
    return url


# --- loading -------------------------------------------------------------------------------------

SECTIONS: tuple[str, ...] = tuple(Settings.model_fields)


def _format_error(where: str, err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        loc = [str(x) for x in e["loc"]]
        if loc[:1] == ["source"] and len(loc) > 1 and loc[1] in ("fixture", "prometheus", "cloudwatch"):
            del loc[1]  # the discriminator tag is noise to the reader
        loc = ".".join(loc)
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        elif e["type"] == "missing":
            msg = "required field is missing"
        parts.append(f"{loc or '(top level)'}: {msg}")
    return f"{where}: " + "; ".join(parts)


# A parameters file is a page of YAML; anything near this size is a mistake (or an attack on the parser).
MAX_PARAMETERS_BYTES = 1_000_000


class _StrictLoader(yaml.SafeLoader):
    """safe_load that refuses a key given twice in one mapping (YAML's last-one-wins hides typos)."""


def _no_duplicate_keys(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: set = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"key {key!r} is given twice", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicate_keys)


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise SettingsError(f"parameters file {path} does not exist", hint="pass -p parameters/<name>.yaml") from None
    except IsADirectoryError:
        raise SettingsError(f"parameters file {path} is a directory", hint="pass -p parameters/<name>.yaml") from None
    except OSError as e:
        raise SettingsError(f"parameters file {path}: cannot read it ({e.strerror})") from None
    if len(raw) > MAX_PARAMETERS_BYTES:
        raise SettingsError(f"{path}: {len(raw):,} bytes is not a parameters file (at most {MAX_PARAMETERS_BYTES:,})")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise SettingsError(f"{path}:{line}: not UTF-8 text (byte {e.start}: {raw[e.start:e.start + 1]!r})",
                            hint="save the parameters file as UTF-8") from None
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except RecursionError:
        raise SettingsError(f"{path}: nested too deeply to be a parameters file") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise SettingsError(f"{where}: not valid YAML: {problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SettingsError(f"{path}: the top level must be a mapping of sections, not {type(data).__name__}")
    return data


def load_settings(path: str | Path, overrides: dict[str, Any] | None = None) -> Settings:
    """Validate ``path`` (plus per-section ``overrides``, e.g. injected by papermill)."""
    path = Path(path)
    data = read_yaml(path)
    extra = {k: v for k, v in (overrides or {}).items() if k in SECTIONS and v is not None}
    data.update(extra)
    where = display_path(path) + (" (+ notebook parameters " + ", ".join(sorted(extra)) + ")" if extra else "")
    try:
        return Settings.model_validate(data)
    except ValidationError as e:
        raise SettingsError(_format_error(where, e)) from None


def display_path(path: str | Path) -> str:
    """A path as the user should see it: relative to the project root when inside it (stable in outputs)."""
    p = Path(path).resolve()
    try:
        return str(p.relative_to(project_root()))
    except ValueError:
        return str(p)
