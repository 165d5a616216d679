"""CacheWarm (kind ``cache.warm``): fill the most requested keys before traffic asks for them.

Inputs: ``{"top_n": N}`` (what the impact plan emits) plus, optionally, ``concurrency``, ``ttl_s``,
``source_url`` (the app's base URL whose pages fill the keys; default: the running lab's backend),
``keys`` (warm exactly these instead of ranking a sample), ``sample_size``, ``prometheus_url`` (route
request counts break ties in the ranking), ``lock_ttl_ms``, ``lab_state``.

How keys are chosen and filled is ``runbook_lib.cache.warm``: logical keys ranked by sampled versions,
at most ``concurrency`` fills at a time, a ``SET NX PX`` lock per key (stampede-safe), values written
with ``SET ... EX ttl NX`` (never over what the app cached). Warming only adds ordinary cache entries
that expire with their TTL, so there is nothing to roll back: the rollback says so and changes nothing.
A Redis failure mid-warm stops it with CacheWarmError (audited ``failed`` with what was done so far).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from .base import Action, ApplyResult, Inputs, Plan, RollbackResult, VerifyResult, register_action
from .errors import ActionInputError

# Verify: warmed keys still present right after the warm-up. Under a too-small maxmemory new keys are
# evicted at once; 90% leaves room for a few expiring or evicted in between.
VERIFY_PRESENT_SHARE = 0.9
# Without a TTL input or a readable app config: the seed's fixed TTL (fixtures/d2-latency remediation).
DEFAULT_TTL_S = 300.0
# Sample for ranking: 5000 keys holds a few versions of each popular logical key under the incident.
SAMPLE_SIZE = 5000


class CacheWarmInputs(Inputs):
    top_n: int = Field(ge=1, le=100_000)
    concurrency: int = Field(8, ge=1, le=64)
    ttl_s: float | None = Field(None, gt=0)
    source_url: str | None = None
    keys: list[str] | None = None
    sample_size: int = Field(SAMPLE_SIZE, ge=1, le=1_000_000)
    prometheus_url: str | None = None
    lock_ttl_ms: int = Field(30_000, ge=100, le=3_600_000)
    lab_state: str | None = None


@register_action
class CacheWarm(Action):
    kind = "cache.warm"
    family = "redis"
    Inputs = CacheWarmInputs
    effect_signal = "cache_hit_ratio"
    risk = "low"  # adds entries only; the fills go through the app at a bounded concurrency
    reversible = False  # nothing to undo: entries expire with their TTL

    inputs: CacheWarmInputs

    def __init__(self, inputs=None, **kwargs):
        super().__init__(inputs, **kwargs)
        self.summary: dict[str, Any] | None = None  # what the last apply warmed, skipped and failed

    @property
    def id(self) -> str:
        return f"cache-warm-top-{self.inputs.top_n}"

    @property
    def title(self) -> str:
        return f"Warm the {self.inputs.top_n} most requested cache keys"

    @property
    def target(self) -> str:
        return "redis cache entries (added only; they expire with their TTL)"

    def _source_desc(self) -> str:
        return self.inputs.source_url or "<lab backend URL>"

    def plan(self) -> Plan:
        from ..cache.warm import TTL_JITTER

        i = self.inputs
        rank = (f"the {len(i.keys)} given keys" if i.keys else
                f"SCAN a sample of {i.sample_size} keys (read-only); rank logical keys by sampled versions"
                + (" and route requests from Prometheus" if i.prometheus_url else "") + f"; take the top {i.top_n}")
        ttl = f"{i.ttl_s:g}" if i.ttl_s else "<app cache_ttl_s>"
        return Plan(self.id, self.kind, self.title, self.target,
                    commands=[rank,
                              (f"per key, {i.concurrency} at a time: skip if EXISTS; SET warm:lock:<key> <token> NX "
                               f"PX {i.lock_ttl_ms}; GET {self._source_desc()}<path of key>; SET <key> <body> EX "
                               f"{ttl} (minus up to {TTL_JITTER:.0%} jitter) NX; release the lock "
                               "(compare-and-delete)")],
                    captures=["nothing: warming only adds entries that expire with their TTL"],
                    rollback_commands=[], reversible=self.reversible, risk=self.risk)

    def rollback_commands(self, prior: dict[str, Any]) -> list[str]:
        return []

    def capture(self, targets) -> dict[str, Any]:
        return {}

    def is_applied(self, state: dict[str, Any]) -> bool:
        return False  # warming leaves nothing to discover: its entries look like any other cache entry

    # --- doing it ---------------------------------------------------------------------------------

    def _lab(self) -> dict[str, Any] | None:
        from pathlib import Path

        from ..lab.errors import LabError
        from ..lab.stack import read_lab

        try:
            return read_lab(Path(self.inputs.lab_state) if self.inputs.lab_state else None)
        except LabError:
            return None

    def _ttl(self, lab: dict | None) -> float:
        if self.inputs.ttl_s:
            return float(self.inputs.ttl_s)
        if lab is not None:
            from pathlib import Path

            from ..lab.config import CONFIG_FILE, read_config
            from ..lab.errors import LabError

            try:
                return float(read_config(Path(lab["state"]) / CONFIG_FILE).cache_ttl_s)
            except (LabError, KeyError):
                pass
        return DEFAULT_TTL_S

    def items(self, client) -> list:
        """The keys this warm-up would fill, best first (read-only)."""
        from ..cache import warm as w
        from ..cache.collect import key_sample, route_requests_from_prometheus

        if self.inputs.keys:
            return list(self.inputs.keys)[: self.inputs.top_n]
        sample = key_sample(client, self.inputs.sample_size)
        if len(sample):
            sample = sample[sample["key"].map(lambda k: w.lab_path(w.logical_key(k)) is not None)]
        rr = (route_requests_from_prometheus(self.inputs.prometheus_url, 300)
              if self.inputs.prometheus_url else None)
        return w.rank_keys(sample, self.inputs.top_n, rr, w.lab_request_route)

    def apply(self, targets) -> ApplyResult:
        from ..cache import warm as w
        from ..cache.errors import CacheWarmError

        lab = self._lab()
        source = self.inputs.source_url or (lab or {}).get("backend_url")
        if not source:
            raise ActionInputError(f"{self.id}: no source_url and no running lab to fill keys from",
                                   hint="give source_url (the app's base URL) in the action's inputs")
        ttl = self._ttl(lab)
        client = targets.redis()
        items = self.items(client)
        loader = w.HttpLoader(source)
        try:
            s = w.warm(client, items, loader, ttl, self.inputs.concurrency, self.inputs.lock_ttl_ms,
                       endpoint=targets.endpoint("redis"))
        except CacheWarmError as e:
            self.summary = e.summary
            raise
        finally:
            loader.close()
        self.summary = s.as_dict()
        return ApplyResult(bool(s.warmed), s.line(),
                           [f"SET <key> <body> EX {ttl:g} NX for {len(s.warmed)} keys from {w.urlsplit(source).netloc}"])

    def verify(self, targets) -> VerifyResult:
        s = self.summary or {}
        warmed = s.get("warmed_keys", [])
        if not warmed:
            ok = not s.get("failed")
            return VerifyResult(ok, "nothing needed warming" if ok else "no key could be warmed",
                                {k: s.get(k) for k in ("requested", "skipped", "failed")})
        client = targets.redis()
        pipe = client.pipeline(transaction=False)
        for k in warmed:
            pipe.exists(k)
        present = sum(int(x) for x in pipe.execute())
        share = present / len(warmed)
        observed = {"warmed": len(warmed), "present": present, "skipped": s.get("skipped"), "failed": s.get("failed")}
        if share >= VERIFY_PRESENT_SHARE:
            return VerifyResult(True, f"{present} of {len(warmed)} warmed keys are in the cache", observed)
        return VerifyResult(False, f"only {present} of {len(warmed)} warmed keys are still cached (evicted? "
                                   "raise maxmemory before warming)", observed)

    def rollback(self, targets, prior: dict[str, Any]) -> RollbackResult:
        return RollbackResult(False, "nothing to undo: warmed entries are ordinary cache entries and expire "
                                     "with their TTL")
