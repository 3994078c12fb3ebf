"""What a turn asks the caller for, read from what it said (its last question)."""

from __future__ import annotations

import pytest

from dealerline_agent.expects import expects_for
from dealerline_common.speculation import EXPECTS, Expects

# Phrasings of the scripted LLM (libs/sim scenarios, the agent's test scenarios) and
# what a real model says for the same questions.
CASES: list[tuple[str, Expects | None]] = [
    ("What's the best phone number to reach you?", "phone"),
    ("Could I get the VIN?", "vin"),
    ("Can you read me the vehicle identification number?", "vin"),
    ("What's the license plate?", "plate"),
    ("What day and time work for you?", "datetime"),
    ("When would you like to come in?", "datetime"),
    ("Would you prefer the morning or afternoon?", "datetime"),
    ("Morning or afternoon?", "datetime"),
    ("How many miles are on it?", "mileage"),
    ("What's the current mileage?", "mileage"),
    ("May I have your name?", "name"),
    ("And who am I speaking with?", "name"),
    ("What's your email address?", "email"),
    ("Shall I book it?", "yes_no"),
    ("Is that right?", "yes_no"),
    ("Does Tuesday at 9 work?", "yes_no"),
    ("Would you like to add one to your visit?", "yes_no"),
    ("Thank you, your appointment is confirmed.", None),
    (
        "Thanks for calling Sunrise Motors service department. This is Ava, how can I help you today?",
        None,
    ),
    ("Sure, I can book an oil change for your Camry. Which day works best for you?", "datetime"),
    (
        "Nine is taken that day, but I have other times that morning. Would one of those work?",
        "yes_no",
    ),
    ("Tuesday at nine a.m. is open. Shall I book the oil change for your Camry then?", "yes_no"),
    ("I'm sorry, I couldn't book that just now. Can I try another time?", "yes_no"),
    ("You're all set for Tuesday at nine a.m. Is there anything else I can help you with?", None),
    (
        "Of course. Let me try to connect you with someone from our service team. Please stay on the line.",
        None,
    ),
    (
        "I'm sorry, I couldn't note the callback just now. Could you tell me your name and the best number to reach you?",
        "phone",
    ),
    (
        "Done. Someone from our team will call you back tomorrow about brakes. Is there anything else I can help you with?",
        None,
    ),
    ("Thanks for calling Sunrise Motors. Have a great day!", None),
    ("Good news, Dana from our team is available. I'm connecting you now.", None),
    (
        "I'm sorry, I couldn't reach anyone on our team just now. Would you like us to call you back?",
        "yes_no",
    ),
    (
        "Welcome back. I hope our team could help you. Is there anything else I can do for you today?",
        None,
    ),
    (
        "I'm sorry, I couldn't reach anyone on our team just now. I can keep helping you here, or have someone call you back. What would you prefer?",
        None,
    ),
    ("Thanks for holding, I'm back with you. What else can I help you with today?", None),
    ("Great, I have that day open for an oil change. Can I get your name for the booking?", "name"),
    (
        "Thank you. You're all set for Tuesday at nine a.m. Is there anything else I can help you with?",
        None,
    ),
    ("Sorry, I didn't quite catch that. Could you say that again?", None),
    (
        "Thanks for calling Sunrise Motors. Your oil change is on Tuesday at nine. Press 1 to confirm.",
        "yes_no",
    ),
    ("You pressed 12. To confirm, please press 1.", "yes_no"),
    (
        "I'm sorry, nobody on the team could take the call. Would you like a callback appointment?",
        "yes_no",
    ),
    (
        "That time is open. To confirm: the service you asked for, at that time, for your car. Shall I book it?",
        "yes_no",
    ),
    ("I can see your upcoming appointment. What would you like to do with it?", None),
    ("Yes, we can help with that. Anything else?", None),
    ("You're welcome, John. What else can I do for you?", None),
    ("Got it. What car is it, and which day works for you?", "datetime"),
    (
        "Of course, I'm calling a team member for you now. While we wait, is there anything I can help with?",
        None,
    ),
    ("Of course. When would be a good time to call you, and what is it about?", None),
    (
        "On Saturday the service department is open from eight a.m. to four p.m. Is there anything else I can help you with?",
        None,
    ),
    (
        "A tire rotation is twenty nine dollars and takes about thirty minutes. Would you like to add one to your visit?",
        "yes_no",
    ),
    ("We do a lot. Which of these can I help you with today?", None),
    ("Of course, take your time. I'm here when you're ready.", None),
    (
        "Sure, I can help you book an oil change. We have openings most days this week. Which day works best for you?",
        "datetime",
    ),
    ("Could you tell me your name and phone number?", "phone"),
    ("Can I get your phone number, and then your name?", "name"),
    ("Is this the best number to reach you?", "yes_no"),
    ("Is 555-123-4567 the best number to reach you?", "yes_no"),
    ("So that's five five five, one two three, four five six seven, correct?", "yes_no"),
    ("Do you have the VIN handy?", "vin"),
    ("Do you know the current mileage?", "mileage"),
    ("And your name?", "name"),
    ("What's the plate number?", "plate"),
    ("Can you spell your email for me?", "email"),
    ("Would you like a reminder by email?", "yes_no"),
    ("Would you prefer Tuesday or Wednesday?", "datetime"),
    ("Would you like a callback, or would you rather hold?", None),
    ("Do you prefer morning or afternoon?", "datetime"),
    ("Is there a day that works better for you?", "datetime"),
    ("What time works for you?", "datetime"),
    ("What seems to be the problem with the car?", None),
    ("What's the name of the service you need?", None),
    ("Does that day work for you?", "yes_no"),
    ("Please tell me your phone number.", "phone"),
    ("I'll just need your name and the VIN.", "vin"),
    ("Who's calling, please?", "name"),
    ("What is the best email to send the confirmation to?", "email"),
    ("How soon do you need the car back?", "datetime"),
    ("What's the year, make and model of your vehicle?", None),
    ("Would you like us to do a tire rotation as well?", "yes_no"),
    ("Can I get your name and the best number to reach you?", "phone"),
    ("I have an opening on Tuesday at 9:30 AM. Does that work for you?", "yes_no"),
    ("What's a good day for you?", "datetime"),
    ("Should I send the confirmation to your email?", "yes_no"),
    ("See you at 9 a.m. Shall I book it?", "yes_no"),
    ("", None),
    ("What is the V.I.N. on the car?", "vin"),
    ("And the vehicle identification number?", "vin"),
    ("Could you read me the number on your license plate?", "plate"),
    ("What's the tag number on the car?", "plate"),
    ("Roughly how many miles does it have?", "mileage"),
    ("What does the odometer say?", "mileage"),
    ("Could I have your first and last name, please?", "name"),
    ("Who do I have the pleasure of speaking with today?", "name"),
    ("What’s the best email to reach you at?", "email"),
    ("When works best for you?", "datetime"),
    ("Any particular day you had in mind?", "datetime"),
    ("Would nine or ten thirty be better?", "datetime"),
    ("Would you like the loaner car?", "yes_no"),
    ("Do you want me to go ahead and book it?", "yes_no"),
    ("Can I help with anything else today?", None),
    ("Sure, I can help with that. What's going on with the car?", None),
    ("Great, thank you!", None),
    ("Your car will be ready at five.", None),
]


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_a_turn_expects_what_its_last_question_asks_for(
    text: str, expected: Expects | None
) -> None:
    assert expects_for(text) == expected
    assert expected is None or expected in EXPECTS


def test_the_last_question_of_the_turn_counts() -> None:
    text = "What's your phone number? Thanks. And which day works for you?"
    assert expects_for(text) == "datetime"
    text = "Which day works for you? I have Tuesday and Wednesday open."
    assert expects_for(text) == "datetime"  # a statement after it does not undo it


def test_the_entity_named_last_wins() -> None:
    assert expects_for("Can I get your name and the best number to reach you?") == "phone"
    assert expects_for("Can I get your number and then your name?") == "name"


def test_a_repeat_request_asks_for_what_the_previous_turn_asked_for() -> None:
    again = "Sorry, I didn't quite catch that. Could you say that again?"
    assert expects_for(again) is None
    assert expects_for(again, previous="What's the best number to reach you?") == "phone"
    assert expects_for(again, previous="How can I help you today?") is None
    # A new question is not a repeat, whatever came before.
    assert expects_for("Sorry, which day?", previous="What's your name?") == "datetime"


def test_pieces_as_the_splitter_cut_them_read_like_the_whole_text() -> None:
    # The turn's text is its pieces joined: "Sure," + "is Tuesday or Wednesday better?"
    assert expects_for("Sure, is Tuesday or Wednesday better?") == "datetime"
    assert expects_for("Okay, does Tuesday at nine a.m. work?") == "yes_no"
