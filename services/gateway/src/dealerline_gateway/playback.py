"""Outbound playback state of one call: turn ordering, the sentence queue, marks, and what
the caller actually heard when they barged in.

Sentences of a turn may arrive out of order (parallel TTS workers); they are released to
the send queue strictly in ``seq`` order. A newer turn supersedes the older one; a
barged-in turn is cancelled; audio for either is dropped. "Newer" is by the turn's origin
(``timings.speech_end`` of a caller turn, ``timings.stream_started`` of a greeting or
resume turn): audio of a turn that started before the current one (a redelivered TTS job
of an earlier reply) is dropped as stale instead of taking over; when either origin is
unknown, the turn seen last wins. Every sentence is followed by
one mark ``<turn_id>:<seq>``; Twilio echoes it once the sentence has played. Marks that
were pending when we sent ``clear`` are echoed too, but were not heard, so they are
remembered and ignored.

Playback can be *held* (the caller started speaking over it, :mod:`.backchannel`): the
sender sends no new frame until it is resumed, from the same place, or the turn is
barged in on. A sentence held half way has no mark out yet, so none of it counts as heard
through a mark; what the caller heard of it is the audio sent before the hold.

This class does no I/O: the sender (:mod:`.sender`) sends what :attr:`Playback.queue`
gives it and reports back with :meth:`sent_chunk` / :meth:`sent_mark` / :meth:`mark_echoed`. Each
sentence keeps the trace context its audio message arrived with, so its playback span
joins the call's trace under the TTS span that made it. :attr:`Playback.expects` is what
the newest turn's closing message said it asks the caller for.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from dataclasses import dataclass, field

from dealerline_common.messages import AudioMeta, TurnTimings
from dealerline_common.speculation import Expects
from dealerline_common.tracing import Context

_REMEMBERED_TURNS = 64


@dataclass
class Sentence:
    turn_id: str
    seq: int
    text: str
    audio: bytes
    duration_ms: float
    meta: AudioMeta
    trace_ctx: Context | None = None  # of the audio message (the TTS span), when tracing

    @property
    def mark_name(self) -> str:
        return f"{self.turn_id}:{self.seq}"


@dataclass
class _Mark:
    turn_id: str
    seq: int
    text: str
    duration_ms: float
    first_sent_at: float


@dataclass
class Turn:
    turn_id: str
    utterance_id: str | None = None
    next_seq: int = 0
    pending: dict[int, tuple[AudioMeta, bytes, Context | None]] = field(default_factory=dict)
    closed: bool = False  # the last=True message has been released
    cancelled: bool = False
    queued: int = 0  # sentences in the send queue or being sent
    outstanding: set[str] = field(default_factory=set)
    heard: dict[int, str] = field(default_factory=dict)
    first_media_at: float | None = None
    last_echo_at: float | None = None
    timings: TurnTimings | None = None
    sentence_started: dict[int, float] = field(default_factory=dict)
    sending: Sentence | None = None  # the sentence going out, its mark not sent yet
    sending_ms: float = 0.0  # audio of it sent so far
    gap_since: float | None = None  # when a later sentence arrived while next_seq was missing
    origin: float | None = None  # when the turn began (see :func:`turn_origin`)

    @property
    def done(self) -> bool:
        """Everything of the turn has been played (or it was cancelled)."""
        return self.cancelled or (self.closed and self.queued == 0 and not self.outstanding)


def turn_origin(timings: TurnTimings) -> float | None:
    """When a turn began: the end of the caller's speech it answers, or the start of the
    stream for a greeting / resume turn; None when the metadata does not say."""
    if timings.speech_end is not None:
        return timings.speech_end
    return timings.stream_started


@dataclass(frozen=True)
class BargeInResult:
    turn_id: str
    heard_text: str
    heard_seqs: list[int]


@dataclass(frozen=True)
class Dropped:
    reason: str  # "cancelled", "stale", "duplicate", "queue_full"


class Playback:
    def __init__(self, queue_max: int) -> None:
        self.queue: asyncio.Queue[Sentence] = asyncio.Queue(maxsize=queue_max)
        self.turns: collections.OrderedDict[str, Turn] = collections.OrderedDict()
        self.current: Turn | None = None
        self.marks: dict[str, _Mark] = {}
        self.cleared: set[str] = set()
        self.changed = asyncio.Event()  # set on any progress (see wait_turn_done)
        self.expects: Expects | None = None  # what the newest turn asks the caller for
        self.held_since: float | None = None  # held (the caller speaks over it) since
        self._unheld = asyncio.Event()
        self._unheld.set()

    # ----------------------------------------------------------------- inbound audio

    def offer(
        self, meta: AudioMeta, payload: bytes, at: float = 0.0, trace_ctx: Context | None = None
    ) -> list[Dropped]:
        """One sentence (or the closing ``last`` message) from TTS, received at ``at``
        (with the trace context its message carried)."""
        turn = self.turns.get(meta.turn_id)
        if turn is not None and turn.cancelled:
            return [Dropped("cancelled")]
        if turn is not None and turn is not self.current:
            return [Dropped("stale")]
        drops: list[Dropped] = []
        origin = turn_origin(meta.timings)
        if turn is None:
            cur = self.current
            if (
                cur is not None
                and origin is not None
                and cur.origin is not None
                and origin < cur.origin
            ):
                # An older turn showing up late (e.g. redelivered after a TTS worker died):
                # remember it as closed and never current, so the rest of it is dropped too.
                self._remember(Turn(meta.turn_id, meta.utterance_id, closed=True, origin=origin))
                return [Dropped("stale")]
            if self.current is not None:
                old = self.current
                drops.extend(Dropped("stale") for _ in old.pending)
                old.pending.clear()
                old.closed = True
            turn = Turn(meta.turn_id, utterance_id=meta.utterance_id, origin=origin)
            self._remember(turn)
            self.current = turn
            self.expects = None  # until its closing message says
        elif turn.origin is None:
            turn.origin = origin
        if meta.seq < turn.next_seq or meta.seq in turn.pending or turn.closed:
            return [*drops, Dropped("duplicate")]
        turn.pending[meta.seq] = (meta, payload, trace_ctx)
        drops.extend(self._release(turn))
        if turn.pending and turn.gap_since is None:
            turn.gap_since = at
        self.changed.set()
        return drops

    def _remember(self, turn: Turn) -> None:
        self.turns[turn.turn_id] = turn
        while len(self.turns) > _REMEMBERED_TURNS:
            self.turns.popitem(last=False)

    def release_stalled(self, now: float, gap_timeout_s: float) -> list[int]:
        """Skip sentences of the current turn that never arrived.

        A missing sentence normally arrives late (a TTS worker died and its job was
        redelivered); after ``gap_timeout_s`` the caller hears the rest of the reply
        rather than silence. Returns the skipped sequence numbers."""
        turn = self.current
        if (
            turn is None
            or turn.cancelled
            or not turn.pending
            or turn.gap_since is None
            or now - turn.gap_since < gap_timeout_s
        ):
            return []
        skipped = list(range(turn.next_seq, min(turn.pending)))
        turn.next_seq = min(turn.pending)
        self._release(turn)
        turn.gap_since = now if turn.pending else None
        self.changed.set()
        return skipped

    def _release(self, turn: Turn) -> list[Dropped]:
        """Queue the turn's sentences that are next in order."""
        drops: list[Dropped] = []
        if turn.next_seq in turn.pending:
            turn.gap_since = None
        while turn.next_seq in turn.pending:
            m, data, trace_ctx = turn.pending.pop(turn.next_seq)
            turn.next_seq += 1
            if turn.timings is None and (data or m.last):
                turn.timings = m.timings
                turn.utterance_id = turn.utterance_id or m.utterance_id
            if data:
                sentence = Sentence(m.turn_id, m.seq, m.text, data, m.duration_ms, m, trace_ctx)
                try:
                    self.queue.put_nowait(sentence)
                    turn.queued += 1
                except asyncio.QueueFull:
                    drops.append(Dropped("queue_full"))
            if m.last:
                turn.closed = True
                turn.pending.clear()
                if turn is self.current:
                    self.expects = m.expects
                break
        return drops

    # ----------------------------------------------------------------- sending

    def playable(self, sentence: Sentence) -> bool:
        """Whether a sentence taken from the queue (or half sent) should still be sent."""
        turn = self.turns.get(sentence.turn_id)
        return turn is not None and not turn.cancelled and turn is self.current

    def finished_sending(self, sentence: Sentence) -> None:
        """The sender is done with a sentence taken from the queue (sent or dropped)."""
        turn = self.turns.get(sentence.turn_id)
        if turn is not None:
            turn.queued = max(0, turn.queued - 1)
            if turn.sending is sentence:
                turn.sending = None
        self.changed.set()

    def sent_chunk(self, sentence: Sentence, at: float, chunk_ms: float = 0.0) -> bool:
        """A media chunk (``chunk_ms`` of audio) went out; True when it is the first media
        frame of the turn."""
        turn = self.turns[sentence.turn_id]
        turn.sentence_started.setdefault(sentence.seq, at)
        if turn.sending is not sentence:
            turn.sending, turn.sending_ms = sentence, 0.0
        turn.sending_ms += chunk_ms
        if turn.first_media_at is None:
            turn.first_media_at = at
            return True
        return False

    def sent_mark(self, sentence: Sentence) -> None:
        """A mark went out after the sentence. If the turn was cancelled meanwhile (a
        barge-in landed while the mark was being sent), the ``clear`` follows it, so Twilio
        echoes it without the sentence having been heard: it is remembered as cleared."""
        name = sentence.mark_name
        turn = self.turns.get(sentence.turn_id)
        if turn is None:
            return  # forgotten turn: its echo matches nothing and is ignored
        if turn.sending is sentence:
            turn.sending = None
        if turn.cancelled:
            self.cleared.add(name)
            self.changed.set()
            return
        turn.outstanding.add(name)
        self.marks[name] = _Mark(
            sentence.turn_id,
            sentence.seq,
            sentence.text,
            sentence.duration_ms,
            turn.sentence_started.get(sentence.seq, turn.first_media_at or 0.0),
        )

    def mark_echoed(self, name: str, at: float) -> bool:
        """Twilio echoed a mark; True if it means the sentence was heard."""
        if name in self.cleared:
            self.cleared.discard(name)
            return False
        mark = self.marks.pop(name, None)
        if mark is None:
            return False
        turn = self.turns.get(mark.turn_id)
        if turn is not None:
            turn.outstanding.discard(name)
            turn.heard[mark.seq] = mark.text
            turn.last_echo_at = at
        self.changed.set()
        return True

    # ----------------------------------------------------------------- hold

    @property
    def held(self) -> bool:
        return self.held_since is not None

    def hold(self, at: float) -> bool:
        """Send no new frame until :meth:`resume` (or a barge-in); False if held already."""
        if self.held_since is not None:
            return False
        self.held_since = at
        self._unheld.clear()
        return True

    def resume(self, at: float) -> float:
        """Play on from where it held; returns how long it was held (0 if it was not)."""
        since, self.held_since = self.held_since, None
        self._unheld.set()
        self.changed.set()
        return 0.0 if since is None else max(0.0, at - since)

    async def wait_unheld(self) -> None:
        """Until playback is not held."""
        await self._unheld.wait()

    # ----------------------------------------------------------------- state

    @property
    def outstanding(self) -> int:
        return len(self.marks)

    def active(self) -> bool:
        """Something is playing or about to: marks outstanding, or the current turn is open
        with audio sent or queued."""
        if self.marks:
            return True
        cur = self.current
        return (
            cur is not None
            and not cur.cancelled
            and (cur.queued > 0 or (not cur.closed and cur.first_media_at is not None))
        )

    def turn_done(self, turn_id: str | None) -> bool:
        if turn_id is None:
            return not self.marks and all(t.queued == 0 for t in self.turns.values())
        turn = self.turns.get(turn_id)
        return turn is not None and turn.done

    async def wait_turn_done(self, turn_id: str | None, timeout_s: float) -> bool:
        """Until :meth:`turn_done` (True), or ``timeout_s`` passed (False)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not self.turn_done(turn_id):
            self.changed.clear()
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), min(remaining, 1.0))
        return True

    # ----------------------------------------------------------------- barge-in

    def barge_in(self, at: float) -> list[BargeInResult]:
        """Cancel every turn still playing; say what the caller heard of each. A hold
        ends (what comes next is a new turn)."""
        self.resume(at)
        hit: list[Turn] = []
        for turn in self.turns.values():
            if turn.cancelled:
                continue
            if turn.outstanding or (turn is self.current and not turn.done):
                hit.append(turn)
        results = []
        for turn in hit:
            turn.cancelled = True
            turn.pending.clear()
            heard_seqs = sorted(turn.heard)
            words = [turn.heard[s] for s in heard_seqs]
            partial = self._partial(turn, at)
            if partial:
                words.append(partial)
            for name in turn.outstanding:
                self.marks.pop(name, None)
                self.cleared.add(name)
            turn.outstanding.clear()
            results.append(BargeInResult(turn.turn_id, " ".join(words).strip(), heard_seqs))
        self.changed.set()
        return results

    def _partial(self, turn: Turn, at: float) -> str:
        """The words heard at ``at`` of the sentences not yet heard to their end: of one
        whose mark is out, by the share of its duration that elapsed since it started
        (the previous mark echo, or its first media frame); then of one still being sent
        (paced, or held half way), by the share of it sent (Twilio holds at most about a
        chunk more than it played)."""
        parts = [self._partial_marked(turn, at), self._partial_sent(turn)]
        return " ".join(p for p in parts if p)

    def _partial_marked(self, turn: Turn, at: float) -> str:
        playing = [self.marks[n] for n in turn.outstanding if n in self.marks]
        if not playing:
            return ""
        mark = min(playing, key=lambda m: m.seq)
        started = max(
            turn.last_echo_at or turn.first_media_at or mark.first_sent_at, mark.first_sent_at
        )
        if mark.duration_ms <= 0:
            return ""
        fraction = min(1.0, max(0.0, (at - started) * 1000.0 / mark.duration_ms))
        words = mark.text.split()
        return " ".join(words[: int(fraction * len(words))])

    def _partial_sent(self, turn: Turn) -> str:
        """The words of the sentence being sent (no mark out yet) by the share sent."""
        sentence = turn.sending
        if sentence is None or sentence.duration_ms <= 0:
            return ""
        fraction = min(1.0, turn.sending_ms / sentence.duration_ms)
        words = sentence.text.split()
        return " ".join(words[: int(fraction * len(words))])
