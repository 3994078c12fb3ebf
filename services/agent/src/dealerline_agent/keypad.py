"""The caller's key presses as input: "press 1 to confirm" works.

The gateway groups the caller's keys into runs (at ``#``, at 32 keys, or when no key
follows for a while) and publishes each run as one ``KeyPresses`` on
``call.<sid>.control``. The replica the ``agent`` queue group hands it to answers it with
one normal turn whose input is ``[DTMF:<keys>]`` and whose id is
``turn_id_for_dtmf(<stream>, <run>)``: stream sids are unique and the gateway numbers a
stream's runs, so the id names this run of this call only, and a second delivery of the
run replays the stored reply instead of answering again. A key press does not cut the
reply being played short (what counts as a barge-in is the gateway's call). The keys
are never logged: callers key in account and card numbers.
"""

from __future__ import annotations

from dealerline_common.conversation import dtmf_marker, turn_id_for_dtmf
from dealerline_common.logs import get_logger
from dealerline_common.messages import KeyPresses, TurnTimings

from .sessions import Sessions
from .tasks import Tasks
from .turns import TurnInput, TurnRunner

log = get_logger(__name__)


class Keypad:
    def __init__(self, runner: TurnRunner, sessions: Sessions, tasks: Tasks) -> None:
        self.runner = runner
        self.sessions = sessions
        self.tasks = tasks

    def on_keys(self, keys: KeyPresses) -> None:
        """This replica got the run through the queue group: it answers it."""
        sid = keys.session_id
        if self.sessions.hung_up(sid):
            log.info("key presses for a finished call", session_id=sid)
            return
        turn = TurnInput(
            turn_id=turn_id_for_dtmf(keys.stream_sid, keys.run),
            text=dtmf_marker(keys.digits),
            # The run's last key is when the caller finished answering, as the last
            # voiced frame is for speech: the turn's origin.
            timings=TurnTimings(speech_end=keys.at),
        )
        log.info("key presses", session_id=sid, turn_id=turn.turn_id, keys=len(keys.digits))
        self.tasks.spawn(self.runner.turn(sid, turn), name=f"turn:{turn.turn_id}")
