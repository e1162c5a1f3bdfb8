"""The playbook: YAML rules that turn what is said on a call into hints for the agent.

A rule matches an utterance by any of: **phrases** (word sequences, compared after light
stemming, so "cancelling my subscription" matches "cancel my subscription"), **regexes**
(Python syntax, case-insensitive, on the utterance text), or an **intent** (example utterances;
the score is the BM25-IDF-weighted share of an example's content words that the utterance
contains, best example wins). ``unless`` phrases or regexes veto a match ("don't want to
cancel"). Rules filter by speaker (``caller``, ``agent``, ``any``), carry a ``priority`` (the
highest ones are shown when more match than ``max_hints_per_utterance``) and a per-call
``cooldown_s`` (or ``once``), measured on the call's audio timeline so replays behave the same.

**Disclosures** are things the agent must say within ``within_s`` seconds of the call's start
("this call may be recorded"); when the first utterance at or after that time arrives and no
agent utterance has matched yet, a reminder hint is shown once.

The ``sentiment`` and ``kb`` sections configure :mod:`~workers.assist.sentiment` and
:mod:`~workers.assist.kb`. ``docs/assist.md`` documents every field;
``workers/assist/examples/playbook.yaml`` is a complete example for a support line.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import yaml

from workers.assist.errors import PlaybookError
from workers.assist.messages import AssistKind, AssistMessage, TranscriptText
from workers.assist.text import bm25_idf, contains_sequence, content_stems, stems

Audience = Literal["caller", "agent", "any"]


# --------------------------------------------------------------------------- matching


@dataclass(frozen=True, slots=True)
class Match:
    """Why a rule matched: ``score`` 1.0 for a phrase or regex, the similarity for an intent."""

    score: float
    reason: str


@dataclass(frozen=True, slots=True)
class Matcher:
    """Phrases, regexes and intent examples (OR), vetoed by ``unless``."""

    phrases: tuple[tuple[str, ...], ...] = ()
    phrase_texts: tuple[str, ...] = ()
    regexes: tuple[re.Pattern[str], ...] = ()
    examples: tuple[tuple[str, ...], ...] = ()
    example_texts: tuple[str, ...] = ()
    threshold: float = 0.6
    unless_phrases: tuple[tuple[str, ...], ...] = ()
    unless_regexes: tuple[re.Pattern[str], ...] = ()

    def match(self, text: str, idf: Mapping[str, float]) -> Match | None:
        said = stems(text)
        if any(contains_sequence(said, p) for p in self.unless_phrases) or any(
                r.search(text) for r in self.unless_regexes):
            return None
        for phrase, original in zip(self.phrases, self.phrase_texts, strict=True):
            if contains_sequence(said, phrase):
                return Match(1.0, f"phrase {original!r}")
        for regex in self.regexes:
            if regex.search(text):  # the reason never quotes the caller (it may be unredacted)
                return Match(1.0, f"pattern {regex.pattern!r}")
        return self._intent(set(content_stems(text)), idf)

    def _intent(self, said: set[str], idf: Mapping[str, float]) -> Match | None:
        best, best_text = 0.0, ""
        for example, original in zip(self.examples, self.example_texts, strict=True):
            total = sum(idf.get(t, 1.0) for t in set(example))
            if total <= 0:
                continue
            score = sum(idf.get(t, 1.0) for t in set(example) if t in said) / total
            if score > best:
                best, best_text = score, original
        if best >= self.threshold:
            return Match(round(best, 3), f"intent {best:.2f} like {best_text!r}")
        return None


@dataclass(frozen=True, slots=True)
class Rule:
    """One playbook rule (see the module docstring)."""

    id: str
    title: str
    text: str
    matcher: Matcher
    kind: AssistKind = "hint"
    audience: Audience = "caller"
    priority: int = 50
    cooldown_s: float = 120.0
    once: bool = False
    tags: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Disclosure:
    """Something the agent must say within ``within_s`` seconds of the call's start."""

    id: str
    title: str
    text: str
    said: Matcher
    within_s: float
    priority: int = 90


@dataclass(frozen=True, slots=True)
class SentimentConfig:
    """Caller sentiment alerting: one utterance at ``strong`` or below, or the rolling mean of
    the last ``window`` compound scores (once ``min_utterances`` are in it) at ``threshold`` or
    below; re-armed above ``threshold + recover``. Escalation phrases alert on their own."""

    threshold: float = -0.3
    strong: float = -0.6
    min_utterances: int = 2
    recover: float = 0.2
    window: int = 3
    escalation_phrases: tuple[str, ...] = ()
    escalation_cooldown_s: float = 60.0


@dataclass(frozen=True, slots=True)
class KbConfig:
    """Knowledge suggestions: whose utterances are queries, and how good a match must be."""

    audience: Audience = "caller"
    min_score: float = 4.0
    min_terms: int = 2
    max_per_utterance: int = 1


# --------------------------------------------------------------------------- state


@dataclass(slots=True)
class PlaybookState:
    """One call's playbook memory: when each rule last fired, which disclosures were said or
    reminded, and the tags of every rule that matched (for the summary's outcome)."""

    fired_at: dict[str, float] = field(default_factory=dict)
    said: set[str] = field(default_factory=set)
    reminded: set[str] = field(default_factory=set)
    tags: Counter[str] = field(default_factory=Counter)


# --------------------------------------------------------------------------- the playbook


@dataclass(frozen=True, slots=True)
class Playbook:
    """Rules, disclosures and the sentiment and knowledge-base settings of one support line."""

    name: str = "playbook"
    caller_roles: frozenset[str] = frozenset({"other"})
    agent_roles: frozenset[str] = frozenset({"assistant", "user"})
    rules: tuple[Rule, ...] = ()
    disclosures: tuple[Disclosure, ...] = ()
    sentiment: SentimentConfig = SentimentConfig()
    kb: KbConfig = KbConfig()
    max_hints_per_utterance: int = 2
    idf: Mapping[str, float] = field(default_factory=dict)

    # ---------------------------------------------------------------- loading

    @classmethod
    def load(cls, path: Path | str) -> Playbook:
        """Read and validate a YAML playbook; :class:`PlaybookError` says what is wrong."""
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise PlaybookError(f"cannot read playbook {path}: {exc}") from None
        return cls.from_yaml(text, source=str(path))

    @classmethod
    def from_yaml(cls, text: str, *, source: str = "playbook") -> Playbook:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise PlaybookError(f"{source} is not valid YAML: {exc}") from None
        return cls.from_dict(data, source=source)

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "playbook") -> Playbook:
        return _Loader(source).playbook(data)

    # ---------------------------------------------------------------- matching

    def roles_of(self, audience: Audience) -> frozenset[str] | None:
        """The wire roles (``other``, ``assistant``, ``user``) of an audience; None = any."""
        if audience == "caller":
            return self.caller_roles
        if audience == "agent":
            return self.agent_roles
        return None

    def matches(self, utterance: TranscriptText) -> list[tuple[Rule, Match]]:
        """Every rule that matches ``utterance`` (no cooldowns), highest priority first."""
        found = []
        for rule in self.rules:
            roles = self.roles_of(rule.audience)
            if roles is not None and utterance.role not in roles:
                continue
            match = rule.matcher.match(utterance.text, self.idf)
            if match is not None:
                found.append((rule, match))
        found.sort(key=lambda pair: (-pair[0].priority, -pair[1].score))
        return found

    def evaluate(self, utterance: TranscriptText, state: PlaybookState) -> list[AssistMessage]:
        """The hints to show for ``utterance``: matching rules out of cooldown and due
        disclosure reminders, at most :attr:`max_hints_per_utterance`, by priority."""
        candidates: list[AssistMessage] = []
        for rule, match in self.matches(utterance):
            state.tags.update(rule.tags)
            last = state.fired_at.get(rule.id)
            if last is not None and (rule.once or utterance.offset < last + rule.cooldown_s):
                continue
            candidates.append(AssistMessage(
                call_id=utterance.call_id, transcript_id=utterance.transcript_id,
                kind=rule.kind, title=rule.title, text=rule.text, source="playbook",
                ref=rule.id, reason=match.reason, priority=rule.priority,
                offset=utterance.offset))
        candidates += self._disclosures(utterance, state)
        candidates.sort(key=lambda m: -m.priority)
        chosen = candidates[:self.max_hints_per_utterance]
        for message in chosen:
            if message.source == "playbook":
                state.fired_at[message.ref] = utterance.offset
            else:
                state.reminded.add(message.ref)
        return chosen

    def _disclosures(self, utterance: TranscriptText, state: PlaybookState) -> list[AssistMessage]:
        if utterance.role in self.agent_roles:
            for disclosure in self.disclosures:
                if disclosure.id not in state.said and disclosure.said.match(
                        utterance.text, self.idf):
                    state.said.add(disclosure.id)
        due = []
        for disclosure in self.disclosures:
            if (disclosure.id in state.said or disclosure.id in state.reminded
                    or utterance.offset < disclosure.within_s):
                continue
            due.append(AssistMessage(
                call_id=utterance.call_id, transcript_id=utterance.transcript_id, kind="hint",
                title=disclosure.title, text=disclosure.text, source="disclosure",
                ref=disclosure.id, priority=disclosure.priority, offset=utterance.offset,
                reason=f"not said by the agent in the first {disclosure.within_s:g} s"))
        return due

    def disclosure_status(self, state: PlaybookState) -> dict[str, str]:
        """Per disclosure: ``said``, ``reminded`` (not said when due) or ``pending``."""
        return {d.id: "said" if d.id in state.said else
                "reminded" if d.id in state.reminded else "pending" for d in self.disclosures}


# --------------------------------------------------------------------------- YAML loader


class _Loader:
    """Validates the parsed YAML, naming the field of every error (``rules[2].match``)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.examples: list[list[str]] = []

    def fail(self, where: str, message: str) -> PlaybookError:
        return PlaybookError(f"{self.source}: {where}: {message}")

    def mapping(self, value: Any, where: str) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(where, f"expected a mapping, got {type(value).__name__}")
        return value

    def strings(self, value: Any, where: str) -> tuple[str, ...]:
        if value is None:
            return ()
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) and v.strip()
                                                  for v in value):
            raise self.fail(where, "expected a list of non-empty strings")
        return tuple(v.strip() for v in value)

    def number(self, data: dict[str, Any], key: str, default: float, where: str, *,
               minimum: float | None = None) -> float:
        value = data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(f"{where}.{key}", f"expected a number, got {value!r}")
        if minimum is not None and value < minimum:
            raise self.fail(f"{where}.{key}", f"expected at least {minimum:g}, got {value!r}")
        return float(value)

    def text(self, data: dict[str, Any], key: str, where: str, default: str | None = None
             ) -> str:
        value = data.get(key, default)
        if not isinstance(value, str) or not value.strip():
            raise self.fail(f"{where}.{key}", "expected a non-empty string")
        return " ".join(value.split())

    def audience(self, data: dict[str, Any], where: str, default: str) -> Audience:
        value = data.get("role", default)
        if value not in ("caller", "agent", "any"):
            raise self.fail(f"{where}.role", f"expected caller, agent or any, got {value!r}")
        return cast(Audience, value)

    def regexes(self, value: Any, where: str) -> tuple[re.Pattern[str], ...]:
        out = []
        for index, pattern in enumerate(self.strings(value, where)):
            try:
                out.append(re.compile(pattern, re.IGNORECASE))
            except re.error as exc:
                raise self.fail(f"{where}[{index}]", f"invalid regex: {exc}") from None
        return tuple(out)

    def matcher(self, value: Any, where: str, threshold: float) -> Matcher:
        data = self.mapping(value, where)
        unknown = set(data) - {"phrases", "regexes", "intent", "unless"}
        if unknown:
            raise self.fail(where, f"unknown keys {sorted(unknown)}; expected phrases, "
                            "regexes, intent, unless")
        phrases = self.strings(data.get("phrases"), f"{where}.phrases")
        intent = self.mapping(data.get("intent"), f"{where}.intent")
        examples = self.strings(intent.get("examples"), f"{where}.intent.examples")
        example_stems = tuple(tuple(content_stems(e)) for e in examples)
        self.examples += [list(e) for e in example_stems]
        unless = self.mapping({"phrases": data["unless"]} if isinstance(
            data.get("unless"), list | str) else data.get("unless"), f"{where}.unless")
        matcher = Matcher(
            phrases=tuple(tuple(stems(p)) for p in phrases), phrase_texts=phrases,
            regexes=self.regexes(data.get("regexes"), f"{where}.regexes"),
            examples=example_stems, example_texts=examples,
            threshold=self.number(intent, "threshold", threshold, f"{where}.intent",
                                  minimum=0.0),
            unless_phrases=tuple(tuple(stems(p)) for p in self.strings(
                unless.get("phrases"), f"{where}.unless.phrases")),
            unless_regexes=self.regexes(unless.get("regexes"), f"{where}.unless.regexes"))
        if not (matcher.phrases or matcher.regexes or matcher.examples):
            raise self.fail(where, "needs at least one of phrases, regexes, intent.examples")
        return matcher

    def rule(self, value: Any, where: str, defaults: dict[str, Any]) -> Rule:
        data = self.mapping(value, where)
        kind = data.get("kind", "hint")
        if kind not in ("hint", "alert"):
            raise self.fail(f"{where}.kind", f"expected hint or alert, got {kind!r}")
        return Rule(
            id=self.text(data, "id", where), title=self.text(data, "title", where),
            text=self.text(data, "text", where),
            matcher=self.matcher(data.get("match"), f"{where}.match",
                                 self.number(defaults, "intent_threshold", 0.6, "defaults")),
            kind=kind, audience=self.audience(data, where, "caller"),
            priority=int(self.number(data, "priority", 50, where)),
            cooldown_s=self.number(data, "cooldown_s",
                                   self.number(defaults, "cooldown_s", 120, "defaults"),
                                   where, minimum=0),
            once=bool(data.get("once", False)),
            tags=self.strings(data.get("tags"), f"{where}.tags"))

    def disclosure(self, value: Any, where: str) -> Disclosure:
        data = self.mapping(value, where)
        return Disclosure(
            id=self.text(data, "id", where), title=self.text(data, "title", where),
            text=self.text(data, "text", where),
            said=self.matcher(data.get("said"), f"{where}.said", 0.8),
            within_s=self.number(data, "within_s", 30, where, minimum=0),
            priority=int(self.number(data, "priority", 90, where)))

    def items(self, value: Any, where: str) -> list[Any]:
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.fail(where, "expected a list")
        return value

    def playbook(self, value: Any) -> Playbook:
        data = self.mapping(value, "top level")
        if data.get("version", 1) != 1:
            raise self.fail("version", f"expected 1, got {data.get('version')!r}")
        roles = self.mapping(data.get("roles"), "roles")
        defaults = self.mapping(data.get("defaults"), "defaults")
        rules = tuple(self.rule(r, f"rules[{i}]", defaults)
                      for i, r in enumerate(self.items(data.get("rules"), "rules")))
        ids = Counter(r.id for r in rules)
        duplicated = [i for i, n in ids.items() if n > 1]
        if duplicated:
            raise self.fail("rules", f"duplicate ids {duplicated}")
        disclosures = tuple(self.disclosure(d, f"disclosures[{i}]") for i, d in
                            enumerate(self.items(data.get("disclosures"), "disclosures")))
        sentiment = self.mapping(data.get("sentiment"), "sentiment")
        kb = self.mapping(data.get("kb"), "kb")
        return Playbook(
            name=str(data.get("name", "playbook")),
            caller_roles=frozenset(self.strings(roles.get("caller", ["other"]), "roles.caller")),
            agent_roles=frozenset(self.strings(roles.get("agent", ["assistant", "user"]),
                                               "roles.agent")),
            rules=rules, disclosures=disclosures,
            sentiment=SentimentConfig(
                threshold=self.number(sentiment, "threshold", -0.3, "sentiment"),
                strong=self.number(sentiment, "strong", -0.6, "sentiment"),
                min_utterances=int(self.number(sentiment, "min_utterances", 2, "sentiment",
                                               minimum=1)),
                recover=self.number(sentiment, "recover", 0.2, "sentiment", minimum=0),
                window=int(self.number(sentiment, "window", 3, "sentiment", minimum=1)),
                escalation_phrases=self.strings(sentiment.get("escalation_phrases"),
                                                "sentiment.escalation_phrases"),
                escalation_cooldown_s=self.number(sentiment, "escalation_cooldown_s", 60,
                                                  "sentiment", minimum=0)),
            kb=KbConfig(
                audience=self.audience(kb, "kb", "caller"),
                min_score=self.number(kb, "min_score", 4.0, "kb", minimum=0),
                min_terms=int(self.number(kb, "min_terms", 2, "kb", minimum=1)),
                max_per_utterance=int(self.number(kb, "max_per_utterance", 1, "kb",
                                                  minimum=0))),
            max_hints_per_utterance=int(self.number(data, "max_hints_per_utterance", 2,
                                                    "top level", minimum=1)),
            idf=_idf(self.examples))


def _idf(examples: Sequence[Iterable[str]]) -> dict[str, float]:
    """IDF of every stem over all intent examples of the playbook (each example a document)."""
    df: Counter[str] = Counter()
    for example in examples:
        df.update(set(example))
    return {t: bm25_idf(n, len(examples)) for t, n in df.items()}


__all__ = ["Audience", "Disclosure", "KbConfig", "Match", "Matcher", "Playbook",
           "PlaybookState", "Rule", "SentimentConfig"]
