"""Agent assist: live hints, knowledge suggestions, sentiment alerts, PII/PCI redaction and an
end-of-call summary, computed from the transcripts topic.

Pure modules (no I/O beyond reading their configuration files, no Kafka, no asyncio):

* :mod:`~workers.assist.text` — tokens, stems, stop words, sentences (shared by the others).
* :mod:`~workers.assist.numbers` — written and spoken numbers in text, digit by digit.
* :mod:`~workers.assist.redact` — card numbers (written and spoken, Luhn-checked), CVV and
  expiry after a card, SSNs, e-mail addresses and phone numbers → typed placeholders.
* :mod:`~workers.assist.playbook` — YAML rules (phrases, regexes, intents), cooldowns and
  "not yet said by the agent" disclosure reminders.
* :mod:`~workers.assist.kb` — BM25 over Markdown articles split into passages.
* :mod:`~workers.assist.sentiment` — VADER per utterance, rolling per-role trend, alerts.
* :mod:`~workers.assist.summary` — the end-of-call record.
* :mod:`~workers.assist.engine` — one call's state across all of the above: transcripts-topic
  records in, redacted records, assist messages and summaries out.

The Faust agent (:mod:`~workers.assist.app`) only decodes records, feeds the engine and sends
what it returns; :mod:`~workers.assist.bench` measures transcript → assist latency.
``docs/assist.md`` is the guide; ``schemas/assist.schema.json`` and
``schemas/summaries.schema.json`` describe what goes on the wire.
"""
