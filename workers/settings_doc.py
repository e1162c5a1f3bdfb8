"""Renders ``docs/settings.md``: every ``CALLSCRIBE_*`` variable of every worker, from the
settings classes themselves (``python -m workers.settings_doc > docs/settings.md``)."""

from __future__ import annotations

from pydantic_settings import BaseSettings

from workers.settings import (
    AssistSettings,
    BridgeSettings,
    IngestSettings,
    KafkaSettings,
    TranscribeSettings,
    env_name,
)

SECTIONS: tuple[tuple[str, type[BaseSettings]], ...] = (
    ("Every worker (Kafka and topics)", KafkaSettings),
    ("Ingest (`callscribe ingest`)", IngestSettings),
    ("Transcription (`callscribe transcribe`)", TranscribeSettings),
    ("Agent assist (`callscribe assist`)", AssistSettings),
    ("Bridge (`callscribe bridge`)", BridgeSettings),
)


def render() -> str:
    lines = ["# Settings", "",
             "Generated from `workers/settings.py` by `python -m workers.settings_doc`; a test "
             "keeps it in sync. Each worker reads only its own section (and the first).", ""]
    for title, cls in SECTIONS:
        lines += [f"## {title}", "", "| variable | default | meaning |", "|---|---|---|"]
        inherited = set(KafkaSettings.model_fields) if cls is not KafkaSettings else set()
        for name, field in cls.model_fields.items():
            if name in inherited:
                continue
            default = field.default
            shown = "unset" if default is None else f"`{default}`"
            description = (field.description or "").replace("|", "\\|")
            old = getattr(cls, "renamed", {}).get(name)
            if old:
                description += (f" Formerly `{old}`, still read (with a deprecation warning) "
                                "until the next release.")
            lines.append(f"| `{env_name(cls, name)}` | {shown} | {description} |")
        lines.append("")
    lines += ["Also read by every worker: `CALLSCRIBE_LOG_FORMAT` (`json` or `text`; default "
              "text on a terminal, else json) and `CALLSCRIBE_LOG_LEVEL` (default `INFO`).", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    print(render(), end="")
