"""Triage: the logic behind the DLQ triage and search explorer apps (notebooks/)."""
