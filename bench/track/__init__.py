"""Keeping results: the JSONL result store, MLflow tracking and its outbox."""
