"""Who said what on a one-channel (mixed) call (pure: no model, no I/O).

A final's audio is cut into overlapping windows (:func:`windows`); each window's voice print
(:mod:`workers.transcribe.voices`, computed off the event loop) is assigned online to one of
the call's speakers (:class:`SpeakerClusters`: cosine similarity to each speaker's centroid, a
new speaker when far from all, at most ``max_speakers``), and after each utterance the call's
windows so far are clustered again (:func:`two_means`): while one speaker is known, a split
into two far enough apart, whose first voice comes back after the second, starts the second
speaker (a voice close to the first one's never falls below the new-speaker similarity); with
two, their centroids are refined, undoing the pull of utterances holding both voices. Speakers
map to roles by the order they were first heard (``first``: the role of the first voice on the
call, e.g. ``assistant`` on a Bland call, whose AI agent greets first). A final whose words
carry times and whose windows change speaker between words is split into turns
(:func:`turns`), each its own transcript with its own start; without word times the final
takes the speaker of most of its windows. Words are given times (aligned) only for utterances
whose windows may change speaker (:func:`may_change_speaker`).

Roles are decided once, when a final is made: finals stand, later voices only move the
centroids (and so the roles of later finals); interims carry the channel's latest role as a
guess.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from workers.records import Role

Array = np.ndarray[Any, Any]

#: Window length and step (ms): GE2E's 1.6 s partials, a little shorter for resolution.
WINDOW_MS = 1500
STEP_MS = 500
#: Shortest window worth a voice print (shorter utterances get one over all their audio).
MIN_WINDOW_MS = 400
#: Cosine similarity below which a window starts a new speaker (while there is room).
NEW_SPEAKER_BELOW = 0.70
#: A split of one speaker's windows in two (:func:`two_means`) is a second speaker when the
#: halves' centroids are less similar than this, and the voices take turns: runs of at least
#: :data:`SPLIT_RUN` windows of the first, the second and the first again (one voice drifting
#: within an utterance splits as readily, but does not come back).
SPLIT_BELOW = 0.88
SPLIT_RUN = 4
#: Windows kept for re-clustering (10 minutes of speech at one every 0.5 s: about 6 ms per
#: final on the event loop, 0.5 ms on a minute's).
HISTORY = 1200
#: A turn must hold this many words (shorter runs join their neighbours).
MIN_TURN_WORDS = 2


@dataclass(frozen=True, slots=True)
class Voices:
    """The voice prints of one utterance's windows: ``spans[i]`` (ms from the utterance's
    start) has ``vectors[i]`` (L2-normed)."""

    spans: tuple[tuple[int, int], ...]
    vectors: Array
    #: Word (start, end) times in ms, kept here when the final's result leaves its words
    #: out (they were aligned only to close sentences); () when unknown.
    word_times: tuple[tuple[int, int], ...] = ()

    def __len__(self) -> int:
        return len(self.spans)


@dataclass(frozen=True, slots=True)
class Turn:
    """A run of words of one speaker: ``words[first:last]`` of the final, from ``start_ms``
    (relative to the utterance; 0 for the first turn)."""

    role: Role
    first: int
    last: int
    start_ms: int


def windows(duration_ms: int, *, window_ms: int = WINDOW_MS,
            step_ms: int = STEP_MS) -> list[tuple[int, int]]:
    """Windows (ms from the start) covering an utterance of ``duration_ms``: every
    ``step_ms``, ``window_ms`` long, the last one ending at the end; one window over all of a
    short utterance (none under :data:`MIN_WINDOW_MS`)."""
    if duration_ms < MIN_WINDOW_MS:
        return []
    if duration_ms <= window_ms:
        return [(0, duration_ms)]
    out = [(start, start + window_ms)
           for start in range(0, duration_ms - window_ms + 1, step_ms)]
    if out[-1][1] < duration_ms:
        out.append((duration_ms - window_ms, duration_ms))
    return out


def unit_rows(rows: Array) -> Array:
    """``rows`` (a new array), each scaled to length 1 (a zero row stays zero)."""
    out: Array = rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-9)
    return out


def two_means(vectors: Array, centroids: Array, *, rounds: int = 10) -> tuple[Array, Array]:
    """(labels, centroids) of L2-normed ``vectors`` in two clusters by cosine similarity, from
    the given (2 x dim) ``centroids``; a cluster left empty keeps its centroid."""
    labels: Array = np.zeros(len(vectors), dtype=np.int64)
    for _ in range(rounds):
        labels = (vectors @ centroids.T).argmax(axis=1)
        found = unit_rows(np.stack([vectors[labels == k].sum(axis=0) if (labels == k).any()
                                    else centroids[k] for k in range(2)]))
        if np.allclose(found, centroids):
            break
        centroids = found
    return labels, centroids


def spread_pair(vectors: Array) -> Array:
    """Two starting centroids for :func:`two_means`: the window least like the mean, and the
    window least like that one."""
    mean = vectors.sum(axis=0)
    far = vectors[int((vectors @ mean).argmin())]
    out: Array = np.stack([vectors[int((vectors @ far).argmin())], far]).astype(np.float64)
    return out


def turns_taken(labels: Sequence[int], min_run: int = SPLIT_RUN) -> int:
    """How many times the speaker changes in ``labels`` (in time order), counting only runs
    of at least ``min_run`` windows (shorter runs are noise, or overlap)."""
    kept: list[int] = []
    run = 0
    for i, label in enumerate(labels):
        run = run + 1 if i and label == labels[i - 1] else 1
        if run == min_run and (not kept or kept[-1] != label):
            kept.append(label)
    return max(0, len(kept) - 1)


#: Nearer one centroid than the other by less than this, a window could be either speaker's.
UNSURE_BELOW = 0.05


def may_change_speaker(voices: Voices, centroids: Array | None) -> bool:
    """Whether an utterance's windows may hold a change of speaker, judged against the
    channel's speakers when it was decoded (``centroids``, one per speaker): fewer than two
    known (a second may start here), or its windows are nearest different speakers, or one
    of them is nearly as near the other. One window (or none) holds one speaker."""
    if len(voices) < 2:
        return False
    if centroids is None or len(centroids) < 2:
        return True
    sims = voices.vectors @ np.asarray(centroids).T
    nearest = sims.argmax(axis=1)
    margins = np.abs(sims[:, 0] - sims[:, 1])
    return bool(len(set(nearest.tolist())) > 1 or margins.min() < UNSURE_BELOW)


def other_role(role: Role) -> Role:
    return "other" if role == "assistant" else "assistant"


class SpeakerClusters:
    """The speakers of one mixed channel, found online; see the module docstring."""

    def __init__(self, *, first: Role = "assistant", max_speakers: int = 2,
                 new_below: float = NEW_SPEAKER_BELOW, split_below: float = SPLIT_BELOW) -> None:
        self._first = first
        self._max = max(1, max_speakers)
        self._new_below = new_below
        self._split_below = split_below
        self._sums: list[Array] = []  # per speaker: the sum of its windows' vectors
        #: Every window so far (the latest :data:`HISTORY`), in the order heard.
        self._history: list[Array] = []
        #: The role of the latest final (interims carry it as their guess).
        self.last_role: Role = first

    @property
    def count(self) -> int:
        return len(self._sums)

    def role_of(self, speaker: int) -> Role:
        """The first speaker heard has role ``first``; every other, the other role."""
        return self._first if speaker == 0 else other_role(self._first)

    def _similarities(self, vector: Array) -> Array:
        if not self._sums:
            return np.zeros(0)
        out: Array = self._centroids() @ vector
        return out

    def assign(self, voices: Voices) -> list[int]:
        """Each window's speaker; the centroids learn from them (in the order given), then
        from all the call's windows again (:meth:`_recluster`)."""
        labels = self._online(voices)
        self._history.extend(np.asarray(voices.vectors, dtype=np.float64))
        del self._history[:-HISTORY]
        if len(voices) and self._recluster():
            centroids = self._centroids()
            labels = [int(k) for k in (voices.vectors @ centroids.T).argmax(axis=1)]
        return labels

    def centroids(self) -> Array | None:
        """The speakers' centroids (speakers x dim, L2-normed; None before any is heard)."""
        return self._centroids() if self._sums else None

    def _centroids(self) -> Array:
        return unit_rows(np.stack(self._sums))

    def _recluster(self) -> bool:
        """The call's windows in two clusters again (see the module docstring); whether the
        speakers changed. Speaker 0 stays the one heard first."""
        if self._max != 2 or len(self._history) < 2 * SPLIT_RUN:
            return False
        vectors = np.stack(self._history)
        if len(self._sums) == 2:
            labels, _ = two_means(vectors, self._centroids())
            if len(set(labels.tolist())) < 2:
                return False
        else:
            labels, centroids = two_means(vectors, spread_pair(vectors))
            if (float(centroids[0] @ centroids[1]) >= self._split_below
                    or turns_taken(labels.tolist()) < 2):
                return False
            if labels[0] == 1:  # the call's first window is the first speaker's
                labels = 1 - labels
        self._sums = [vectors[labels == k].sum(axis=0) for k in range(2)]
        return True

    def _online(self, voices: Voices) -> list[int]:
        """Each window to the nearest speaker, or a new one when far from all."""
        labels = []
        for vector in voices.vectors:
            sims = self._similarities(vector)
            if sims.size and (sims.max() >= self._new_below or len(self._sums) >= self._max):
                speaker = int(sims.argmax())
                self._sums[speaker] = self._sums[speaker] + vector
            else:
                speaker = len(self._sums)
                self._sums.append(np.array(vector, dtype=np.float64))
            labels.append(speaker)
        return labels

    def majority(self, voices: Voices, labels: Sequence[int]) -> int:
        """The speaker of most of the utterance's window time."""
        time: dict[int, int] = {}
        for (start, end), label in zip(voices.spans, labels, strict=True):
            time[label] = time.get(label, 0) + end - start
        return max(sorted(time), key=lambda label: time[label])

    def turns(self, voices: Voices, word_times: Sequence[tuple[int, int]],
              fallback: Role) -> list[Turn]:
        """The final's turns: one per run of words of one speaker (words' times in ms from
        the utterance's start; none given: one turn of the majority speaker). No windows:
        one turn of ``fallback``. Updates the centroids and :attr:`last_role`."""
        if not len(voices):
            self.last_role = fallback
            return [Turn(fallback, 0, len(word_times), 0)]
        labels = self.assign(voices)
        if not word_times or len(set(labels)) == 1:
            role = self.role_of(self.majority(voices, labels))
            self.last_role = role
            return [Turn(role, 0, len(word_times), 0)]
        centres = np.array([(s + e) / 2 for s, e in voices.spans])
        word_labels = [labels[int(np.abs(centres - (s + e) / 2).argmin())] for s, e in word_times]
        word_labels = _at_pauses(_smooth(word_labels), word_times)
        out: list[Turn] = []
        for i, label in enumerate(word_labels):
            role = self.role_of(label)
            if out and out[-1].role == role:
                continue
            if out:
                out[-1] = Turn(out[-1].role, out[-1].first, i, out[-1].start_ms)
            # A turn starts between the words: where the previous one ends.
            start = 0 if not out else word_times[i - 1][1] + max(
                0, (word_times[i][0] - word_times[i - 1][1]) // 2)
            out.append(Turn(role, i, len(word_times), start))
        self.last_role = out[-1].role
        return out


def _at_pauses(labels: list[int], word_times: Sequence[tuple[int, int]]) -> list[int]:
    """Each change of speaker moved to the longest pause between words within one word of
    it: a window straddles the change, so the words either side of it are the uncertain
    ones, and people take turns in pauses."""
    out = list(labels)
    changes = [i for i in range(1, len(labels)) if labels[i] != labels[i - 1]]
    for i in changes:
        candidates = [j for j in (i - 1, i, i + 1) if 1 <= j < len(out)]
        best = max(candidates, key=lambda j: (word_times[j][0] - word_times[j - 1][1],
                                              j == i))
        before, after = labels[i - 1], labels[i]
        if best < i:
            out[best:i] = [after] * (i - best)
        elif best > i:
            out[i:best] = [before] * (best - i)
    return out


def _smooth(labels: list[int]) -> list[int]:
    """Runs shorter than :data:`MIN_TURN_WORDS` words take their neighbours' speaker (the
    run before, or after at the start)."""
    out = list(labels)
    changed = True
    while changed and len(set(out)) > 1:
        changed = False
        runs: list[tuple[int, int]] = []  # (start, end) of each run
        for i in range(len(out)):
            if i == 0 or out[i] != out[i - 1]:
                runs.append((i, i + 1))
            else:
                runs[-1] = (runs[-1][0], i + 1)
        for k, (start, end) in enumerate(runs):
            if end - start < MIN_TURN_WORDS and len(runs) > 1:
                source = runs[k - 1] if k > 0 else runs[k + 1]
                out[start:end] = [out[source[0]]] * (end - start)
                changed = True
                break
    return out




@dataclass(frozen=True, slots=True)
class SeparationConfig:
    """Which calls' speakers are separated, and how (``workers.settings`` ``speakers_*``)."""

    #: The ``mix`` values of ``call.started`` whose channel holds both parties.
    mixes: frozenset[str] = frozenset({"mixed"})
    #: The role of the first voice heard on such a call (the provider's metadata may say).
    first: Role = "assistant"
    new_below: float = NEW_SPEAKER_BELOW
    max_speakers: int = 2
    #: The encoder is installed; when not, ``unavailable`` says why.
    available: bool = True
    unavailable: str = ""

    def clusters(self, first: Role | None = None) -> SpeakerClusters:
        return SpeakerClusters(first=first or self.first, max_speakers=self.max_speakers,
                               new_below=self.new_below)


#: ``call.started`` metadata keys that name the role of the first voice on a mixed call.
FIRST_KEYS = ("speakersFirst", "callscribeSpeakersFirst")


def first_from_metadata(metadata: dict[str, Any]) -> Role | None:
    """The role the provider's metadata gives the first voice (None: not said)."""
    for key in FIRST_KEYS:
        value = metadata.get(key)
        if value in ("assistant", "other"):
            return "assistant" if value == "assistant" else "other"
    return None


__all__ = ["FIRST_KEYS", "MIN_WINDOW_MS", "NEW_SPEAKER_BELOW", "SPLIT_BELOW", "STEP_MS",
           "WINDOW_MS", "SeparationConfig", "SpeakerClusters", "Turn", "Voices",
           "first_from_metadata", "may_change_speaker", "other_role", "spread_pair",
           "turns_taken", "two_means", "unit_rows", "windows"]
