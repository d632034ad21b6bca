"""Failures: the error taxonomy, retry/breaker policies and resilience, secret redaction, the dead-
letter record."""
