"""The incident lab: the D2 latency incident reproduced for real on this machine.

``runbook lab up`` starts, under one state folder (``state_dir()``):

* PostgreSQL 15 (pg_stat_statements preloaded, HypoPG installed) seeded with users, orders, products;
* Redis (the cache), with a ``maxmemory`` far below the working set when degraded;
* the lab backend: a supervisor process holding the API socket and N uvicorn replicas serving it;
* Prometheus scraping every replica and the supervisor (node metrics).

The knobs of the backend live in ``<state>/config.json`` (the lab's ConfigMap): replicas re-read it
when its mtime changes, so the runbook fixes the incident by patching it, without a restart.
Modules: ``config`` (knobs, presets), ``seed`` (data, indexes), ``app`` (backend), ``stack``
(up/down/status), ``load`` (load generator), ``cli`` (``runbook lab ...``).
"""
