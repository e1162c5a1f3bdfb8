"""Custom vocabulary: the product names, plan names and jargon a deployment and a call use,
given to whisper as previous text (``<|startofprev|>``) so it hears and spells them as the
business does (pure: no model, no I/O but :func:`load_vocabulary`'s one file read).

Two sources, joined per call (the deployment's terms first, the call's last):

* the deployment's list, a UTF-8 file named by ``CALLSCRIBE_VOCABULARY``: one term a line;
  a line whose first non-blank character is ``#`` is a comment; blank lines are ignored;
  whitespace inside a term is collapsed; a term repeated (case aside) counts once.
* a call's list, the ``vocabulary`` field of its ``call.started`` record. Ingest fills it from
  the provider's start metadata (:func:`call_vocabulary`): a ``vocabulary`` (or
  ``callscribeVocabulary``) key at the top level of the metadata (jambonz ``metadata``, Vonage
  ``headers``) or inside Twilio ``customParameters``, Telnyx
  ``custom_parameters``, Plivo ``extra_headers`` or Genesys AudioHook ``customConfig``; its
  value a list of strings or one string of terms separated by ``,`` ``;`` ``|`` or new lines
  (Plivo's ``extra_headers`` split pairs on ``,`` or ``;``: separate terms with ``|`` there).
  Bland calls (a subscription we open) bring none yet: the deployment's list applies.

Bounds: a term holds at most :data:`MAX_TERM_CHARS` characters (longer: an error in the file,
dropped from a call's list), a call brings at most :data:`MAX_CALL_TERMS` terms (the first are
kept), and the transcriber keeps the prompt within ``CALLSCRIBE_VOCABULARY_MAX_TOKENS`` whisper
tokens (:data:`MAX_PROMPT_TOKENS` at most, whisper's own bound on previous text): a
deployment list longer than that is refused at start-up; when a call's terms would push the
prompt past it, whole terms are dropped from the front, the deployment's first, as
faster-whisper keeps the end of a long prompt (:func:`bound_terms`).

No vocabulary (no file, no call terms) changes nothing: the decoder is given exactly the
tokens it was given before vocabularies existed.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from workers.errors import CallscribeError

#: Longest term (characters): a product or plan name, not a sentence.
MAX_TERM_CHARS = 64
#: Most terms one call brings (its ``call.started`` record's ``vocabulary``).
MAX_CALL_TERMS = 50
#: Whisper's own bound on previous text: half its 448-token context less the
#: ``<|startofprev|>`` token (faster-whisper's ``get_prompt`` keeps as much).
MAX_PROMPT_TOKENS = 448 // 2 - 1
#: Default bound of the prompt (tokens); every decode attends to it.
DEFAULT_MAX_TOKENS = 120
#: Metadata keys (case aside) that hold a call's terms.
KEYS = ("vocabulary", "callscribevocabulary")
#: Metadata objects, by provider, where custom parameters sit (searched after the top level).
NESTED = ("customparameters", "custom_parameters", "extraheaders", "customconfig")
_SEPARATORS = re.compile(r"[,;|\n]")


class VocabularyError(CallscribeError):
    """A vocabulary file that cannot be used as it is (fatal at start-up)."""


def clean_term(term: str) -> str:
    """``term`` with its whitespace collapsed (and none at either end)."""
    return " ".join(term.split())


def normalize_terms(terms: Iterable[str], *, limit: int | None = None) -> tuple[str, ...]:
    """Non-empty terms of at most :data:`MAX_TERM_CHARS` characters, each once (the first
    spelling wins, case aside), the first ``limit`` of them; longer terms are dropped."""
    kept: list[str] = []
    seen: set[str] = set()
    for raw in terms:
        term = clean_term(raw)
        if not term or len(term) > MAX_TERM_CHARS or term.casefold() in seen:
            continue
        seen.add(term.casefold())
        kept.append(term)
        if limit is not None and len(kept) >= limit:
            break
    return tuple(kept)


def parse_vocabulary(text: str, *, source: str = "vocabulary") -> tuple[str, ...]:
    """The terms of a vocabulary file's ``text`` (see the module docstring); a term over
    :data:`MAX_TERM_CHARS` characters raises :class:`VocabularyError` naming its line."""
    terms = []
    for number, line in enumerate(text.splitlines(), 1):
        term = clean_term(line)
        if not term or term.startswith("#"):
            continue
        if len(term) > MAX_TERM_CHARS:
            raise VocabularyError(
                f"{source} line {number}: a term of {len(term)} characters; expected at most "
                f"{MAX_TERM_CHARS} (one product or plan name a line, not a sentence)")
        terms.append(term)
    return normalize_terms(terms)


def load_vocabulary(path: str | Path | None) -> tuple[str, ...]:
    """The terms of the file at ``path`` (None or empty: no vocabulary)."""
    if not path:
        return ()
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8"
        raise VocabularyError(f"{path}: cannot be read ({reason}); expected a readable UTF-8 "
                              "file of one term a line") from None
    return parse_vocabulary(text, source=str(path))


def split_terms(value: Any) -> list[str]:
    """Terms from a metadata value: a list of strings, or one string of terms separated by
    ``,`` ``;`` ``|`` or new lines; anything else holds none."""
    if isinstance(value, str):
        return _SEPARATORS.split(value)
    if isinstance(value, list | tuple):
        return [v for v in value if isinstance(v, str)]
    return []


def _find(metadata: Mapping[str, Any]) -> Any:
    for key, value in metadata.items():
        if isinstance(key, str) and key.lower() in KEYS:
            return value
    return None


def call_vocabulary(metadata: Mapping[str, Any]) -> tuple[str, ...]:
    """A call's terms from its provider's start metadata (see the module docstring): the
    top-level key first, then each provider's custom-parameter object."""
    found = _find(metadata)
    if found is None:
        for key, value in metadata.items():
            if isinstance(key, str) and key.lower() in NESTED and isinstance(value, Mapping):
                found = _find(value)
                if found is not None:
                    break
    return normalize_terms(split_terms(found), limit=MAX_CALL_TERMS)


def prompt_text(terms: Sequence[str]) -> str:
    """The previous text whisper is given for ``terms``: a comma-separated list."""
    return ", ".join(terms) + "." if terms else ""


def bound_terms(terms: Sequence[str], count: Callable[[str], int],
                max_tokens: int) -> tuple[str, ...]:
    """The last of ``terms`` whose :func:`prompt_text` is at most ``max_tokens`` tokens long
    (``count`` tokenizes): whole terms are dropped from the front, as faster-whisper keeps the
    end of a long prompt (the deployment's terms come first, so a call's own terms stay)."""
    kept = list(terms)
    while kept and count(prompt_text(kept)) > max_tokens:
        kept.pop(0)
    return tuple(kept)
