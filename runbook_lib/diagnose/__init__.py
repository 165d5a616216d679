"""Pure analysis over signals and snapshots: incident window and change points, symptoms and lead/lag,
hypotheses, database statements (N+1, seq scans), index candidates, cache keys (design, TTLs)."""
