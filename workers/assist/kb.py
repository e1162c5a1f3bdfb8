"""Knowledge suggestions: BM25 over a folder of Markdown articles split into passages.

Each ``*.md`` file is one article. Its title is the ``title:`` of an optional YAML front matter
block, else its first ``# `` heading, else the file name; ``keywords:`` in the front matter are
added to every passage. The body is split at ``##``/``###`` headings into sections and each
section into paragraphs; a passage is one paragraph, indexed together with its article title
and section heading (so a question about "refunds" finds the paragraph under "## Refunds").

A query (the caller's utterance) scores every passage with Okapi BM25; an article's score is
its best passage's. A suggestion needs ``min_score`` and at least ``min_terms`` distinct query
words in that passage, and an article is suggested at most once per call
(:class:`KbState`). Search is plain Python over an in-memory index: a few thousand passages
answer in well under a millisecond per query term.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from workers.assist.errors import KnowledgeBaseError
from workers.assist.text import Bm25, content_stems, query_stems

_FRONT_MATTER = re.compile(r"\A---\s*\n(.*?)\n---\s*\n", re.DOTALL)
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_BULLET = re.compile(r"^\s*(?:[-+*]|\d+\.)\s+")
_INLINE = re.compile(r"[*_`>|]+")


@dataclass(frozen=True, slots=True)
class Passage:
    """One paragraph of an article, with the heading of its section."""

    article_id: str
    heading: str
    text: str


@dataclass(frozen=True, slots=True)
class Article:
    """One Markdown file: ``id`` is its file name without ``.md``."""

    id: str
    title: str
    passages: tuple[Passage, ...]
    keywords: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Suggestion:
    """The best article for a query, the passage that matched, and why."""

    article_id: str
    title: str
    heading: str
    passage: str
    score: float
    matched: tuple[str, ...]


@dataclass(slots=True)
class KbState:
    """Articles already suggested on one call (never suggested twice)."""

    suggested: list[str] = field(default_factory=list)


def parse_article(article_id: str, markdown: str) -> Article:
    """Split one Markdown document into an :class:`Article` of passages."""
    title = ""
    keywords: tuple[str, ...] = ()
    front = _FRONT_MATTER.match(markdown)
    if front:
        meta = yaml.safe_load(front.group(1)) or {}
        if isinstance(meta, dict):
            title = str(meta.get("title") or "")
            raw = meta.get("keywords") or ()
            keywords = tuple(str(k) for k in (raw if isinstance(raw, list) else [raw]))
        markdown = markdown[front.end():]
    passages: list[Passage] = []
    heading = ""
    paragraph: list[str] = []

    def flush() -> None:
        text = " ".join(" ".join(_BULLET.sub("", line) for line in paragraph).split())
        text = _INLINE.sub("", _LINK.sub(r"\1", text)).strip()
        if text:
            passages.append(Passage(article_id, heading, text))
        paragraph.clear()

    for line in markdown.splitlines():
        found = _HEADING.match(line)
        if found:
            flush()
            if len(found.group(1)) == 1 and not title:
                title = found.group(2)
            else:
                heading = found.group(2)
        elif not line.strip():
            flush()
        else:
            paragraph.append(line)
    flush()
    return Article(article_id, title or article_id.replace("-", " ").title(),
                   tuple(passages), keywords)


class KnowledgeBase:
    """Articles and a BM25 index over their passages."""

    def __init__(self, articles: list[Article], *, k1: float = 1.2, b: float = 0.75) -> None:
        self.articles = {a.id: a for a in articles}
        self.passages = [p for a in articles for p in a.passages]
        self._bm25 = Bm25([self._document(p) for p in self.passages], k1=k1, b=b)

    def _document(self, passage: Passage) -> list[str]:
        article = self.articles[passage.article_id]
        context = " ".join((article.title, passage.heading, *article.keywords))
        return content_stems(context) + content_stems(passage.text)

    @classmethod
    def load(cls, folder: Path | str) -> KnowledgeBase:
        """Every ``*.md`` under ``folder`` (sorted by name); :class:`KnowledgeBaseError` if
        there is none."""
        root = Path(folder)
        if not root.is_dir():
            raise KnowledgeBaseError(f"knowledge-base folder {root} does not exist")
        # Hidden folders are skipped: kubelet keeps a hidden copy (..data) of every file of a
        # mounted ConfigMap, which would index each article twice.
        files = sorted(p for p in root.rglob("*.md")
                       if not any(part.startswith(".") for part in p.relative_to(root).parts))
        if not files:
            raise KnowledgeBaseError(f"knowledge-base folder {root} holds no *.md article")
        try:
            articles = [parse_article(f.stem, f.read_text(encoding="utf-8")) for f in files]
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise KnowledgeBaseError(f"cannot read an article under {root}: {exc}") from None
        return cls(articles)

    def search(self, query: str, *, limit: int = 3, min_score: float = 0.0,
               min_terms: int = 1, exclude: frozenset[str] | set[str] = frozenset(),
               ) -> list[Suggestion]:
        """The best ``limit`` articles for ``query``, each with its best passage."""
        terms = query_stems(query)
        if not terms or not self.passages:
            return []
        best: dict[str, tuple[float, int]] = {}
        for index, score in enumerate(self._bm25.scores(terms)):
            article_id = self.passages[index].article_id
            if score > 0 and article_id not in exclude and score > best.get(
                    article_id, (0.0, -1))[0]:
                best[article_id] = (score, index)
        out = []
        wanted = set(terms)
        for article_id, (score, index) in sorted(best.items(), key=lambda kv: -kv[1][0]):
            passage = self.passages[index]
            matched = tuple(sorted(wanted & set(self._bm25.frequencies[index])))
            if score < min_score or len(matched) < min_terms:
                continue
            out.append(Suggestion(article_id, self.articles[article_id].title,
                                  passage.heading, passage.text, round(score, 3), matched))
            if len(out) >= limit:
                break
        return out

    def suggest(self, query: str, state: KbState, *, min_score: float, min_terms: int,
                limit: int = 1) -> list[Suggestion]:
        """:meth:`search` without the articles already suggested on this call; records what
        it returns in ``state``."""
        found = self.search(query, limit=limit, min_score=min_score, min_terms=min_terms,
                            exclude=set(state.suggested))
        state.suggested += [s.article_id for s in found]
        return found


__all__ = ["Article", "KbState", "KnowledgeBase", "Passage", "Suggestion", "parse_article"]
