"""Turn ordering, marks and heard text, without sockets."""

from __future__ import annotations

import asyncio

from dealerline_common.messages import AudioMeta
from dealerline_gateway.playback import Playback


def meta(turn: str, seq: int, text: str = "", last: bool = False, ms: float = 1000.0) -> AudioMeta:
    return AudioMeta(
        session_id="sess_x", turn_id=turn, seq=seq, last=last, text=text, duration_ms=ms, synth_ms=1
    )


def drain(pb: Playback) -> list[tuple[str, int]]:
    out = []
    while not pb.queue.empty():
        s = pb.queue.get_nowait()
        out.append((s.turn_id, s.seq))
    return out


def test_sentences_released_in_seq_order() -> None:
    pb = Playback(16)
    pb.offer(meta("t1", 2, "c"), b"\x01" * 10)
    assert drain(pb) == []
    pb.offer(meta("t1", 1, "b"), b"\x01" * 10)
    pb.offer(meta("t1", 0, "a"), b"\x01" * 10)
    assert drain(pb) == [("t1", 0), ("t1", 1), ("t1", 2)]
    pb.offer(meta("t1", 3, last=True), b"")
    assert pb.turns["t1"].closed
    assert [d.reason for d in pb.offer(meta("t1", 1, "b"), b"x")] == ["duplicate"]


def test_newer_turn_supersedes_older() -> None:
    pb = Playback(16)
    pb.offer(meta("t1", 1, "b"), b"\x01")
    pb.offer(meta("t2", 0, "x"), b"\x01")
    drops = pb.offer(meta("t1", 0, "a"), b"\x01")
    assert [d.reason for d in drops] == ["stale"]
    assert drain(pb) == [("t2", 0)]


def test_queue_is_bounded() -> None:
    pb = Playback(2)
    drops = [d.reason for i in range(4) for d in pb.offer(meta("t", i, "s"), b"\x01")]
    assert drops == ["queue_full", "queue_full"]


def test_barge_in_reports_only_heard_sentences() -> None:
    pb = Playback(16)
    for seq, text in enumerate(["Hello there.", "We open at nine on weekdays."]):
        pb.offer(meta("t1", seq, text, ms=2000), b"\x01" * 320)
    sentences = [pb.queue.get_nowait() for _ in range(2)]
    for s in sentences:
        pb.sent_chunk(s, 100.0)
        pb.sent_mark(s)
        pb.finished_sending(s)
    assert pb.active()
    assert pb.mark_echoed("t1:0", 102.0)
    # half of the second sentence's 2 s has played since the first mark came back
    [result] = pb.barge_in(103.0)
    assert result.turn_id == "t1"
    assert result.heard_seqs == [0]
    assert result.heard_text == "Hello there. We open at"
    assert not pb.active()
    # the cleared mark is echoed by Twilio but was not heard
    assert not pb.mark_echoed("t1:1", 103.1)
    assert [d.reason for d in pb.offer(meta("t1", 2, "late"), b"\x01")] == ["cancelled"]
    assert pb.turn_done("t1")


def test_turn_done_waits_for_marks() -> None:
    pb = Playback(16)
    pb.offer(meta("t1", 0, "Bye."), b"\x01")
    pb.offer(meta("t1", 1, last=True), b"")
    s = pb.queue.get_nowait()
    assert not pb.turn_done("t1")
    pb.sent_chunk(s, 1.0)
    pb.sent_mark(s)
    pb.finished_sending(s)
    assert not pb.turn_done("t1")
    pb.mark_echoed("t1:0", 2.0)
    assert pb.turn_done("t1")
    assert pb.turn_done(None)


def test_a_sentence_that_never_arrives_is_skipped_after_the_gap_timeout() -> None:
    pb = Playback(16)
    pb.offer(meta("t1", 0, "a"), b"\x01" * 10, at=100.0)
    pb.offer(meta("t1", 2, "c"), b"\x01" * 10, at=100.5)  # seq 1 is missing
    pb.offer(meta("t1", 3, last=True), b"", at=100.6)
    assert drain(pb) == [("t1", 0)]
    assert pb.release_stalled(110.0, gap_timeout_s=20.0) == []  # still waiting for it
    assert pb.release_stalled(121.0, gap_timeout_s=20.0) == [1]
    assert drain(pb) == [("t1", 2)]
    assert pb.turns["t1"].closed


def test_a_late_sentence_within_the_gap_timeout_fills_the_gap() -> None:
    pb = Playback(16)
    pb.offer(meta("t1", 1, "b"), b"\x01" * 10, at=100.0)
    pb.offer(meta("t1", 0, "a"), b"\x01" * 10, at=105.0)  # redelivered in time
    assert drain(pb) == [("t1", 0), ("t1", 1)]
    assert pb.release_stalled(200.0, gap_timeout_s=20.0) == []


def timed(
    turn: str,
    seq: int,
    text: str = "",
    *,
    origin: float | None,
    greeting: bool = False,
    last: bool = False,
) -> AudioMeta:
    m = meta(turn, seq, text, last=last)
    if greeting:
        m.timings.stream_started = origin
    else:
        m.timings.speech_end = origin
    return m


def test_late_audio_of_an_older_turn_never_takes_over() -> None:
    """A TTS worker died holding turn t2's jobs; they are redelivered after the caller
    spoke again and t3 started playing: t2 is dropped as stale, t3 plays on."""
    pb = Playback(16)
    pb.offer(timed("t3", 0, "Newer.", origin=200.0), b"\x01")
    assert drain(pb) == [("t3", 0)]
    drops = [d.reason for d in pb.offer(timed("t2", 0, "Older.", origin=180.0), b"\x02")]
    assert drops == ["stale"]
    assert pb.current is not None and pb.current.turn_id == "t3"
    # the rest of the old turn is dropped too, even without timings
    assert [d.reason for d in pb.offer(meta("t2", 1, "More."), b"\x02")] == ["stale"]
    assert [d.reason for d in pb.offer(meta("t2", 2, last=True), b"")] == ["stale"]
    pb.offer(timed("t3", 1, "Still newer.", origin=200.0), b"\x01")
    assert drain(pb) == [("t3", 1)]
    assert not pb.turns["t3"].closed
    # a greeting turn started before the caller's speech is older as well
    greeting = timed("g", 0, "Hi.", origin=1.0, greeting=True)
    assert [d.reason for d in pb.offer(greeting, b"\x03")] == ["stale"]
    assert pb.current.turn_id == "t3"
    # a genuinely newer turn still supersedes
    pb.offer(timed("t4", 0, "Newest.", origin=210.0), b"\x04")
    assert pb.current.turn_id == "t4" and pb.turns["t3"].closed
    assert drain(pb) == [("t4", 0)]


def test_a_turn_of_unknown_origin_supersedes_as_before() -> None:
    pb = Playback(16)
    pb.offer(timed("t3", 0, "Newer.", origin=200.0), b"\x01")
    pb.offer(meta("t2", 0, "No timings."), b"\x02")  # origin unknown: last seen wins
    assert pb.current is not None and pb.current.turn_id == "t2"
    pb2 = Playback(16)
    pb2.offer(meta("t3", 0, "No timings."), b"\x01")
    pb2.offer(timed("t2", 0, "Older?", origin=180.0), b"\x02")  # current's origin unknown
    assert pb2.current is not None and pb2.current.turn_id == "t2"
    assert drain(pb2) == [("t3", 0), ("t2", 0)]


def test_mark_sent_while_a_barge_in_landed_counts_as_cleared() -> None:
    pb = Playback(16)
    pb.offer(meta("t1", 0, "Hello there.", ms=2000), b"\x01" * 320)
    s = pb.queue.get_nowait()
    pb.sent_chunk(s, 100.0)
    # the caller barges in while the mark is on its way out
    [result] = pb.barge_in(100.5)
    assert result.heard_seqs == []
    pb.sent_mark(s)
    pb.finished_sending(s)
    assert pb.outstanding == 0 and not pb.active()
    assert pb.turns["t1"].outstanding == set()
    # Twilio echoes it after the clear: not heard
    assert not pb.mark_echoed("t1:0", 100.6)
    assert pb.turns["t1"].heard == {}
    assert pb.turn_done("t1") and pb.turn_done(None)


async def test_wait_turn_done_until_the_turn_closes_or_the_timeout() -> None:
    pb = Playback(16)
    assert await pb.wait_turn_done(None, 0.0)  # nothing playing at all
    assert not await pb.wait_turn_done("t1", 0.05)  # never seen
    pb.offer(meta("t1", 0, "a"), b"\x01")
    s = pb.queue.get_nowait()
    waiter = asyncio.create_task(pb.wait_turn_done("t1", 5.0))
    await asyncio.sleep(0.01)
    assert not waiter.done()
    pb.finished_sending(s)
    pb.offer(meta("t1", 1, last=True), b"")
    assert await asyncio.wait_for(waiter, 1.0)
