"""Errors of the assist worker.

Tree (under the package root, :class:`workers.errors.CallscribeError`)::

    CallscribeError
    └── AssistConfigError        the playbook or knowledge base cannot be used (fatal at start)
        ├── PlaybookError        a playbook field is missing or has the wrong shape
        └── KnowledgeBaseError   the knowledge-base folder is missing or holds no article

Records that do not decode raise :class:`workers.errors.RecordError` (skipped and counted),
as in every other worker.
"""

from __future__ import annotations

from workers.errors import CallscribeError


class AssistConfigError(CallscribeError):
    """Configuration the assist worker cannot start with; fix the file and restart."""


class PlaybookError(AssistConfigError):
    """A playbook that does not validate; the message names the field (``rules[2].match``)."""


class KnowledgeBaseError(AssistConfigError):
    """A knowledge-base folder that is missing, unreadable or empty."""
