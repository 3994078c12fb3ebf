"""What a turn asks the caller for: its last question read as an :data:`Expects` (a phone
number, a VIN, a plate, a day or time, a mileage, a name, an email address, a yes or no),
or None when the caller may say anything.

The gateway waits for that entity to be complete before it ends the caller's next turn,
so a wrong guess costs either a cut-off (an entity where the caller goes on) or a slower
turn; None is the safe answer to an open question ("How can I help?", "Anything else?",
"What would you prefer?").

The rules, on the turn's last question (or, with no question, a closing request such as
"Please tell me your phone number." or "To confirm, press 1."):

- A question that asks for an entity's value names it: a wh-question ("What's the best
  number to reach you?", "Which day works?", "How many miles are on it?"), a request
  ("Could I get the VIN?", "Can you spell your email?", "Do you have the plate number?")
  or a fragment ("And your name?"). With several, the one named last wins: the caller
  answers in that order and the last is where the turn can end ("your name and the best
  number to reach you" → phone). An open question after it ("…, and what is it about?")
  makes it None.
- A question that starts with an auxiliary and asks nothing of the sort ("Shall I book
  it?", "Does Tuesday at nine work?", "Is this the best number to reach you?", "Would you
  like…?") or ends on a tag ("…, is that right?") is yes_no; one that offers days or times
  as alternatives ("Tuesday or Wednesday?", "morning or afternoon?") is datetime, other
  alternatives are None.
- A reply that only asks to hear the last answer again ("Sorry, could you say that
  again?") asks for what the previous turn asked for (``previous``).
"""

from __future__ import annotations

import re

from dealerline_common.speculation import Expects

from .sentences import split_sentences

# Entity cues: the words of a question that name what it asks for, searched in the
# lower-cased question (plain apostrophes). The one that starts last wins.
_CUES: dict[Expects, re.Pattern[str]] = {
    "vin": re.compile(r"\bvin\b|\bv\.? ?i\.? ?n\b|vehicle identification"),
    "plate": re.compile(r"\b(?:licen[cs]e|tag)\s+plate|\bplates?\b|\btag number"),
    "mileage": re.compile(
        r"\bmileage\b|\bhow (?:many|much) miles\b|\bmiles (?:are |is |do you have )?on\b"
        r"|\bodometer\b|\bmiles does\b"
    ),
    "email": re.compile(r"\be-?mail\b"),
    "phone": re.compile(
        r"\bphone\b|\b(?:cell|mobile|callback|call-back|contact|daytime|home|work|best|good|"
        r"direct)\s+(?:phone\s+)?number\b|\bnumber (?:to|where|at which|we can|i can|you can)\b"
        r"|\breach you\b|\bwhat number\b|\byour number\b|\bthe number\b"
    ),
    "name": re.compile(
        r"\bname\b(?! of (?:the|that|this|a|an|your) )|\bwho (?:am i|i'm|i am|do i have|is this"
        r"|is calling)\b|\bwho's (?:this|calling)\b|\bmay i ask who\b"
    ),
    "datetime": re.compile(
        r"^(?:and |so |okay |then )?when\b|\bwhen (?:would|do|does|can|could|is|are|will|"
        r"should|works?|suits?)\b|\b(?:what|which|any|a|the|another|other|good|best|better|"
        r"preferred|particular|specific)\s+(?:\w+\s+)?(?:days?|times?|dates?|mornings?|"
        r"afternoons?|evenings?|week|weekday)\b|\b(?:day|time|date)s?\s+(?:and|or)\s+"
        r"(?:day|time|date)s?\b|\bmornings?\s+or\s+(?:the\s+)?(?:afternoons?|evenings?)\b"
        r"|\bhow soon\b|\b(?:day|time|date) (?:works|suits|is good|would work)\b"
    ),
}
# A question that asks for a value although it starts with an auxiliary verb: "Could I
# get the VIN?", "Can you spell your email?", "Do you have the plate number?".
_REQUEST_FORM = re.compile(
    r"\b(?:can|could|may|might|will|would) (?:i|we) (?:please )?(?:get|have|grab|take|ask|"
    r"collect|start with|jot down|note down)\b"
    r"|\b(?:can|could|would|will) you (?:please )?(?:tell|give|share|spell|read|provide|say|"
    r"repeat|send|let me know|walk me|type|enter|key in)\b"
    r"|\bwould you mind (?:telling|giving|sharing|spelling|reading|providing|repeating)\b"
    r"|\bdo you (?:happen to )?(?:have|know|remember)\b"
    r"|\bis there (?:a|any) (?:particular |specific |good |better )?(?:day|time|date)\b"
)
# Words that open a sentence without changing what it asks.
_LEAD_IN = re.compile(
    r"^(?:(?:sure|okay|ok|great|perfect|alright|all right|got it|of course|thanks|thank you|"
    r"no problem|absolutely|well|oh|sorry|and|so|also|now|then)\b[,.!]?\s+)+"
)
_AUXILIARY = re.compile(
    r"^(?:and |so |okay |also |now |then |great |perfect |alright |sorry )?"
    r"(?:is|isn't|are|aren't|am|was|were|do|does|did|don't|doesn't|can|could|will|would|"
    r"won't|shall|should|may|might|have|has|had|want|need)\b"
)
# A read-back to confirm: "…, is that right?", "Is that your cell?", "Does that work?"
_CONFIRM = re.compile(
    r"(?:\bis that (?:right|correct|ok|okay|alright)|\bright|\bcorrect|\bok|\bokay|"
    r"\balright|\bsound good|\byes or no)$|^(?:and |so )?(?:is|are|was|does|did) "
    r"(?:this|that|it|these|those)\b"
)
# Open questions: the caller may say anything.
_OPEN = re.compile(
    r"\banything else\b|\bwhat else\b|\bsomething else\b|\bhow (?:can|may|could) (?:i|we)\b"
    r"|\bwhat can (?:i|we) do\b|\bwhat (?:would|do) you (?:prefer|like to do|want to do)\b"
    r"|\bwhat (?:is|'s) (?:it|this|that) (?:about|regarding|for)\b|\bwhat it's about\b"
    r"|\bwhy\b|\bhow\b(?! (?:many|much|soon))"
)
# An open question after the entity: "When suits you, and what is it about?"
_OPEN_AFTER = re.compile(r"\b(?:and|also|or)\b.*\b(?:what|how|why|where)\b")
_TIME_WORD = re.compile(
    r"\b(?:monday|tuesday|wednesday|thursday|friday|saturday|sunday|today|tomorrow|"
    r"morning|afternoon|evening|noon|week|weekend|o'clock|[ap]\.?m\b|\d{1,2}(?::\d\d)?|"
    r"one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|thirty|fifteen)\b"
)
# A reply that only asks for the last answer again.
_REPEAT = re.compile(
    r"\b(?:say|repeat) (?:that|it|this)\b|\bone more time\b|\bonce more\b|\bagain\b"
    r"|\bdidn't (?:quite )?catch\b|\bcome again\b"
)
# A closing request that is not a question: "Please tell me …", "I'll just need …".
_REQUEST = re.compile(
    r"^(?:please|kindly|go ahead|let me know|tell me|just|i(?:'ll| will| would|'d)? "
    r"(?:just )?need)\b|\bplease (?:tell|give|say|spell|read|share|provide|confirm)\b"
    r"|\bwhen you're ready\b"
)
_PRESS_TO_CONFIRM = re.compile(
    r"\b(?:press|say) (?:1|one|yes)\b.*\bconfirm|\bconfirm\b.*"
    r"\b(?:press|say) (?:1|one|yes)\b"
)


def expects_for(text: str, previous: str | None = None) -> Expects | None:
    """What ``text`` (everything a turn said) asks the caller for; ``previous`` is what
    the turn before said, whose request stands when ``text`` only asks to hear the
    answer again ("Sorry, could you say that again?")."""
    sentences = [_plain(s) for s in split_sentences(text, first_clause=False)]
    question = next((s for s in reversed(sentences) if s.endswith("?")), None)
    if question is None:
        return _from_request(sentences[-1]) if sentences else None
    found = _from_question(question.rstrip("?").strip())
    if found is None and previous and _REPEAT.search(question):
        return expects_for(previous)
    return found


def _plain(sentence: str) -> str:
    """Lower case, plain apostrophes, without the words that open a sentence ("Sure,
    is Tuesday better?" asks like "Is Tuesday better?")."""
    plain = sentence.replace("’", "'").replace("‘", "'").lower()
    return _LEAD_IN.sub("", plain)


def _last_cue(text: str) -> tuple[Expects | None, int]:
    """The entity named last in ``text``, and where its cue ends."""
    best: Expects | None = None
    start, end = -1, -1
    email = _CUES["email"].search(text) is not None
    for kind, pattern in _CUES.items():
        for m in pattern.finditer(text):
            if email and kind == "phone" and m.group() == "reach you":
                continue  # "the best email to reach you at"
            if m.start() > start:
                best, start, end = kind, m.start(), m.end()
    return best, end


def _from_question(q: str) -> Expects | None:
    if _CONFIRM.search(q):
        return "yes_no"
    auxiliary = _AUXILIARY.match(q) is not None
    request = _REQUEST_FORM.search(q) is not None
    kind, end = _last_cue(q)
    if kind is not None and (request or not auxiliary):
        # A wh-question, a request or a fragment ("And your name?") that names it.
        return None if _OPEN_AFTER.search(q, end) else kind
    if _OPEN.search(q):
        return None
    if not auxiliary:
        return None  # a wh-question about something else: "What car is it?"
    if re.search(r"\bor\b", q):
        return "datetime" if _alternatives_are_times(q) else None
    if request:
        return None  # "Could you say that again?", "Can you tell me more?"
    return "yes_no"


def _alternatives_are_times(q: str) -> bool:
    """Whether both sides of ``q``'s last "or" name a day or a time."""
    head, _, tail = q.rpartition(" or ")
    last_clause = re.split(r"[,;:]", head)[-1]
    return bool(_TIME_WORD.search(last_clause) and _TIME_WORD.search(tail))


def _from_request(sentence: str) -> Expects | None:
    """A closing request that is not phrased as a question."""
    if _PRESS_TO_CONFIRM.search(sentence):
        return "yes_no"
    if not _REQUEST.search(sentence):
        return None
    return _last_cue(sentence)[0]
