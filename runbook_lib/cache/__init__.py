"""Cache diagnosis and remediation against a real Redis (issue 6).

* ``collect``: read-only I/O: INFO snapshots, a throttled SCAN sample (TYPE, PTTL, MEMORY USAGE,
  OBJECT IDLETIME through pipelines), the app's own cache counters (its /metrics or Prometheus).
* ``recommend``: a TTL and a maxmemory computed from the measured figures, with the reasoning: a Zipf
  popularity model per key family, fitted on the requests seen over the window, predicts the hit ratio of
  each TTL beyond the window.
* ``simulate``: a TTL cache simulated request by request, to check the model and the warming choices.
* ``report``: the whole diagnosis as one JSON-able dict, and its text rendering.
* ``warm``: ranking the keys worth warming and warming them (concurrency limit, lock per key).
* ``cli``: ``runbook diagnose cache --redis URL [--window SECONDS] [--json]``.

The pure analysis lives in ``runbook_lib.diagnose.cache`` and runs on live and recorded data alike.
"""
