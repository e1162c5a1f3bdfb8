"""``.callscribe/env``: what ``callscribe up`` tells its sibling commands.

``up`` generates a token secret and an API key (unless they are set) and picks the local
ports; it writes them here, one ``NAME=value`` a line (the file is also valid shell, so
``set -a; . .callscribe/env`` exports it), readable by its owner only. ``token``, ``watch``,
``calls`` and ``simulate`` read the file and take each variable from it only where the
environment does not already set it.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping, MutableMapping
from datetime import UTC, datetime
from pathlib import Path

#: Where ``up`` writes and the other commands look, relative to the working directory.
ENV_FILE = Path(".callscribe") / "env"

#: The variables ``up`` writes (anything else in the file is ignored).
KEYS = ("CALLSCRIBE_TOKEN_SECRET", "CALLSCRIBE_API_KEYS", "CALLSCRIBE_BRIDGE_URL",
        "CALLSCRIBE_INGEST_URL", "CALLSCRIBE_INGEST_API_URL")


def write(values: Mapping[str, str], path: Path = ENV_FILE) -> Path:
    """Write ``values`` (those named in :data:`KEYS`) to ``path``, mode 0600."""
    path.parent.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    lines = [f"# Written by `callscribe up` at {stamp}. `callscribe token|watch|calls|simulate`",
             "# read these when the environment does not set them; `set -a; . .callscribe/env`",
             "# exports them into a shell."]
    lines += [f"{key}={shlex.quote(values[key])}" for key in KEYS if values.get(key)]
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write("\n".join(lines) + "\n")
    os.chmod(path, 0o600)  # an older file may have had wider permissions
    return path


def read(path: Path = ENV_FILE) -> dict[str, str]:
    """The variables in ``path`` (empty when there is no file)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    values: dict[str, str] = {}
    for line in text.splitlines():
        name, sep, raw = line.strip().partition("=")
        if not sep or name not in KEYS:
            continue
        parts = shlex.split(raw)
        values[name] = parts[0] if parts else ""
    return values


def load(environ: MutableMapping[str, str] | None = None, path: Path = ENV_FILE) -> Path | None:
    """Copy the file's variables into ``environ`` (default ``os.environ``) where unset;
    the file's path, or ``None`` when there is none."""
    target = os.environ if environ is None else environ
    values = read(path)
    for key, value in values.items():
        if not target.get(key):
            target[key] = value
    return path if values else None
