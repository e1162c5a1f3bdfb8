"""Ingest worker: live call audio over each provider's WebSocket protocol, into Kafka, and call
control back to the provider.

``dialects/`` pure codecs (jambonz, plivo, twilio, bland; neutral ``events``) · ``session``
one call's socket → records · ``server`` provider WebSockets · ``api`` POST /v1/subscriptions ·
``subscriptions`` Bland live-listen clients · ``control`` the call-control port ·
``executor`` liveCalls join/end for owned calls · ``worker`` all of it wired from settings.
See ``docs/providers.md``.
"""
