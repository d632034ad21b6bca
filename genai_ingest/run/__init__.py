"""Run: one ingestion run's steps (prepare, batch, commit), its runtime, claims, summary and the
local Prefect server."""
