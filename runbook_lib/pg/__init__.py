"""Live PostgreSQL diagnosis: statistics snapshots, N+1 and missing-index findings, pool sizing.

* ``stats``: version-aware collection (PostgreSQL 13-17, pg_stat_statements 1.8-1.11) into the same
  DataFrame shapes as the fixture bundle's snapshots, and the deltas between two snapshots;
* ``advisor``: missing-index candidates from the slow statements' parse trees, evaluated with HypoPG;
* ``pool``: connections by state against max_connections, and a pool size from Little's law;
* ``rewrite``: the JOIN / batched form for each N+1 statement (a recommendation, never applied);
* ``report``: all findings of one diagnosis, as JSON or as a terminal report; ``cli``: ``runbook diagnose db``.
"""
