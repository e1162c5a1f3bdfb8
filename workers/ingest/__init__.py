"""Ingest worker: live call audio over each provider's WebSocket protocol, into Kafka."""
