"""Peers' APIs on recursa's engine: `recursa.compat.rlm` speaks the official RLM library's
API (docs/MIGRATING.md)."""
