"""The job registry in Redis (the broker's own server): one record per run, dedupe of alert groups, leases.

Keys (prefix ``runbook:automation``)::

    group:<key>       the job of the group's open firing episode (SET NX: two receivers racing start one job)
    group-last:<key>  the group's last job (a resolved notification repeated later still finds it)
    job:<id>          the job's record (JSON): state, alert, parameters, attempts, lease, result, resolution
    jobs              every job by creation time (sorted set)
    worker:<node>     a live worker (expires unless renewed)

A job's ``state`` goes ``queued`` -> ``running`` -> ``done`` | ``failed`` (``retrying`` between attempts).
While running, its worker holds a *lease* it renews every ``lease/4`` s: a delivery of the same job to another
worker (Redis hands an unacknowledged message to the next worker after the visibility timeout) finds the lease
held and does not start a second run; once the lease runs out (or its process is gone on this host) the
worker has died and the job is taken over. Updates are optimistic transactions (WATCH/MULTI).
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

from runbook_lib.automation.automation_errors import BrokerError
from runbook_lib.run_folder import process_alive

FINISHED = ("done", "failed")
RECORD_TTL_S = 30 * 86400
WORKER_TTL_S = 30

_OPEN = """
local existing = redis.call('GET', KEYS[1])
if existing then return {0, existing} end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[4])
redis.call('SET', KEYS[3], ARGV[1], 'EX', ARGV[4])
redis.call('ZADD', KEYS[4], ARGV[3], ARGV[1])
return {1, ARGV[1]}
"""

_CLOSE = """
local open = redis.call('GET', KEYS[1])
if open then redis.call('DEL', KEYS[1]) return {1, open} end
local last = redis.call('GET', KEYS[2])
if last then return {0, last} end
return {0, false}
"""


def now_s() -> float:
    return time.time()


def iso(ts: float | None) -> str | None:
    return None if ts is None else time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}Z"


@dataclass(frozen=True)
class Owner:
    node: str
    host: str
    pid: int
    token: str

    @classmethod
    def here(cls, node: str) -> Owner:
        return cls(node=node, host=socket.gethostname(), pid=os.getpid(), token=uuid.uuid4().hex)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Claim:
    outcome: str  # claimed | busy | finished | missing
    record: dict[str, Any]
    takeover: bool = False  # an earlier attempt's worker died holding the job
    wait_s: float = 0.0


def _owner_gone(owner: dict | None, now: float, lease_until: float) -> bool:
    if not owner or lease_until <= now:
        return True
    return owner.get("host") == socket.gethostname() and not process_alive(int(owner.get("pid", 0)))


class Registry:
    def __init__(self, url: str, prefix: str = "runbook:automation"):
        self.prefix = prefix
        self.r = redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5, decode_responses=True)
        self._open = self.r.register_script(_OPEN)
        self._close = self.r.register_script(_CLOSE)

    def k(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    def ping(self) -> None:
        try:
            self.r.ping()
        except redis.RedisError as e:
            raise BrokerError(f"Redis at {_where(self.r)} did not answer: {e}") from None

    # --- records -------------------------------------------------------------------------------------

    def get(self, job_id: str) -> dict[str, Any] | None:
        raw = self._call(self.r.get, self.k("job", job_id))
        return json.loads(raw) if raw else None

    def jobs(self) -> list[dict[str, Any]]:
        ids = self._call(self.r.zrange, self.k("jobs"), 0, -1)
        found = {i: self.get(i) for i in ids}
        expired = [i for i, j in found.items() if j is None]
        if expired:  # records expire (RECORD_TTL_S); so does their place in the index
            self._call(self.r.zrem, self.k("jobs"), *expired)
        return [j for j in found.values() if j is not None]

    def update(self, job_id: str, change: Callable[[dict], Any]) -> tuple[dict | None, Any]:
        """Apply ``change(record)`` atomically: it edits the record in place and returns ``(write, result)``;
        ``write`` False leaves the stored record as it was. Returns (the record, the result)."""
        key = self.k("job", job_id)
        out: list = [None, None]

        def tx(pipe):
            raw = pipe.get(key)
            if not raw:
                out[:] = [None, None]
                return
            rec = json.loads(raw)
            write, result = change(rec)
            out[:] = [rec, result]
            if not write:
                return
            rec["updated_at"] = iso(now_s())
            pipe.multi()
            pipe.set(key, json.dumps(rec), ex=RECORD_TTL_S)

        self._call(self.r.transaction, tx, key)
        return out[0], out[1]

    # --- the receiver's side -------------------------------------------------------------------------

    def open_job(self, dedupe: str, record: dict[str, Any]) -> tuple[str, bool]:
        """The job of this group's open episode: a new one (True), or the one already open (False), whose
        notification count goes up."""
        job_id = uuid.uuid4().hex[:16]
        now = now_s()
        record = {**record, "id": job_id, "dedupe_key": dedupe, "state": "queued", "created_at": iso(now),
                  "notifications": 1, "last_notification_at": iso(now), "attempt": 0, "attempts": [],
                  "owner": None, "lease_until": 0, "resolved_at": None, "result": None}
        created, existing = self._call(self._open, keys=[self.k("group", dedupe), self.k("job", job_id),
                                                          self.k("group-last", dedupe), self.k("jobs")],
                                       args=[job_id, json.dumps(record), now, RECORD_TTL_S])
        if created:
            return job_id, True

        def seen(rec):
            rec["notifications"] = rec.get("notifications", 0) + 1
            rec["last_notification_at"] = iso(now)
            return True, None

        self.update(existing, seen)
        return existing, False

    def forget(self, dedupe: str, job_id: str) -> None:
        """Undo ``open_job`` when the task could not be enqueued (the broker refused it): the sender retries."""
        pipe = self.r.pipeline()
        pipe.delete(self.k("group", dedupe), self.k("job", job_id)).zrem(self.k("jobs"), job_id)
        self._call(pipe.execute)

    def resolve(self, dedupe: str) -> str | None:
        """Close the group's firing episode; record the resolution on its job. Returns the job (None: the
        group never had a run here)."""
        _closed, job_id = self._call(self._close, keys=[self.k("group", dedupe), self.k("group-last", dedupe)])
        if not job_id:
            return None
        now = now_s()

        def resolved(rec):
            rec["resolved_notifications"] = rec.get("resolved_notifications", 0) + 1
            rec["resolved_at"] = rec.get("resolved_at") or iso(now)
            return True, None

        self.update(job_id, resolved)
        return job_id

    # --- the worker's side ---------------------------------------------------------------------------

    def claim(self, job_id: str, owner: Owner, lease_s: float) -> Claim:
        now = now_s()

        def take(rec):
            state = rec.get("state")
            if state in FINISHED:
                return False, Claim("finished", rec)
            lease_until = float(rec.get("lease_until") or 0)
            if state == "running" and not _owner_gone(rec.get("owner"), now, lease_until):
                return False, Claim("busy", rec, wait_s=max(lease_until - now, 0.0))
            takeover = state == "running"
            if takeover and rec.get("attempts"):
                rec["attempts"][-1].update(ended_at=iso(now), outcome="worker lost",
                                           reason=f"worker {rec['owner'].get('node')} (pid {rec['owner'].get('pid')}) "
                                                  "stopped renewing its lease mid-run")
            rec["state"] = "running"
            rec["owner"] = owner.as_dict()
            rec["lease_until"] = now + lease_s
            rec["attempt"] = int(rec.get("attempt", 0)) + 1
            rec.setdefault("picked_at", iso(now))
            rec["attempts"].append({"n": rec["attempt"], "node": owner.node, "pid": owner.pid,
                                    "started_at": iso(now), "takeover": takeover})
            return True, Claim("claimed", rec, takeover=takeover)

        rec, result = self.update(job_id, take)
        return Claim("missing", {}) if rec is None else result

    def renew(self, job_id: str, owner: Owner, lease_s: float, **fields: Any) -> bool:
        """Extend the lease (and record ``fields``); False when the job is no longer this worker's."""

        def extend(rec):
            if (rec.get("owner") or {}).get("token") != owner.token or rec.get("state") != "running":
                return False, False
            rec["lease_until"] = now_s() + lease_s
            rec.update(fields)
            return True, True

        _, ok = self.update(job_id, extend)
        return bool(ok)

    def release(self, job_id: str, owner: Owner, state: str, attempt: dict[str, Any], **fields: Any) -> bool:
        """End this worker's attempt: ``retrying`` (enqueued again), ``done`` or ``failed``."""

        def end(rec):
            if (rec.get("owner") or {}).get("token") != owner.token:
                return False, False
            rec["state"] = state
            rec["owner"] = None
            rec["lease_until"] = 0
            if rec.get("attempts"):
                rec["attempts"][-1].update(ended_at=iso(now_s()), **attempt)
            rec.update(fields)
            return True, True

        _, ok = self.update(job_id, end)
        return bool(ok)

    # --- workers -------------------------------------------------------------------------------------

    def worker_up(self, node: str, info: dict[str, Any]) -> None:
        self._call(self.r.set, self.k("worker", node), json.dumps(info), ex=WORKER_TTL_S)

    def worker_down(self, node: str) -> None:
        self._call(self.r.delete, self.k("worker", node))

    def workers(self) -> list[str]:
        head = self.k("worker", "")
        return sorted(k[len(head):] for k in self._call(self.r.scan_iter, head + "*"))

    def _call(self, fn, *args, **kwargs):
        try:
            result = fn(*args, **kwargs)
            return list(result) if fn == self.r.scan_iter else result
        except redis.RedisError as e:
            raise BrokerError(f"Redis at {_where(self.r)}: {type(e).__name__}: {e}") from None


def _where(r: redis.Redis) -> str:
    kw = r.connection_pool.connection_kwargs
    return f"{kw.get('host', '?')}:{kw.get('port', '?')}/{kw.get('db', 0)}"
