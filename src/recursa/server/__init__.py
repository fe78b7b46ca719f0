"""Serving recursa: an OpenAI-compatible HTTP API with a job API (`recursa serve`).

Nothing here imports FastAPI or uvicorn at import time: `settings`, `runs` and `openai_api`
are plain Python (the `mcp` and `llm` integrations use them too); only `app` needs the
`server` extra, and `recursa.cli.serve` imports it when the command runs.
"""
