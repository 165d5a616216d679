"""Decisions: impact ranking, index advisor (HypoPG) and DDL, cache TTL/memory model and warming choice,
pool sizing, query rewrites. Pure where it can be; the advisor asks HypoPG (no change to the server)."""
