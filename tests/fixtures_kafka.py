"""Kafka-protocol broker fixtures (filled in by the log work)."""
