"""The tools' argument schemas: exactly what the LLM sees of each tool's parameters.

A class docstring here would become the schema's description, so the classes have none.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "BookArgs",
    "CallbackArgs",
    "CancelArgs",
    "CheckCodeArgs",
    "CheckAvailabilityArgs",
    "ClearSlotArgs",
    "CreateCustomerArgs",
    "EndCallArgs",
    "HoursArgs",
    "HumanArgs",
    "LookupCustomerArgs",
    "NoArgs",
    "RescheduleArgs",
    "SearchFaqArgs",
    "SetSlotArgs",
    "SlotName",
    "UpdateCustomerArgs",
    "VehicleArgs",
    "VerifyArgs",
]


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NoArgs(_Args):
    pass


class LookupCustomerArgs(_Args):
    phone: str | None = Field(default=None, description="Phone number the caller gave, any format.")
    name: str | None = Field(default=None, description="Full or partial name.")


class CreateCustomerArgs(_Args):
    name: str = Field(description="The caller's full name.")
    phone: str | None = Field(
        default=None, description="Phone number; leave empty to use the caller ID."
    )
    email: str | None = Field(default=None, description="Email address, if given.")


class UpdateCustomerArgs(_Args):
    name: str | None = Field(default=None, description="Corrected full name.")
    email: str | None = Field(default=None, description="New email address.")
    phone: str | None = Field(default=None, description="New phone number.")


class VehicleArgs(_Args):
    make: str | None = Field(default=None, description="e.g. Toyota (needed for a new car).")
    model: str | None = Field(default=None, description="e.g. Camry (needed for a new car).")
    year: int | None = Field(default=None, description="Model year, e.g. 2019.")
    vin: str | None = Field(default=None, description="17-character VIN, if the caller has it.")
    plate: str | None = Field(default=None, description="License plate.")
    mileage: int | None = Field(default=None, description="Odometer miles.")
    vehicle_id: int | None = Field(
        default=None, description="Id of a vehicle on file, to update that one."
    )


SlotName = Literal["service", "date", "time", "vehicle_id", "vehicle", "notes"]


class SetSlotArgs(_Args):
    slot: SlotName = Field(description="Which part of the booking.")
    value: str = Field(
        description="service: a service name; date: YYYY-MM-DD; time: HH:MM (24 h); "
        "vehicle_id: id of a vehicle on file; vehicle: the caller's description; notes: text."
    )


class ClearSlotArgs(_Args):
    slot: SlotName | Literal["all"] = Field(description='A slot name, or "all".')


class CheckAvailabilityArgs(_Args):
    service: str = Field(description="Service name, e.g. Synthetic Oil Change.")
    date: str = Field(description="YYYY-MM-DD.")
    time: str | None = Field(default=None, description="HH:MM (24 h), to check one time.")


class BookArgs(_Args):
    confirmed: bool = Field(
        description="True only after you read back service, day, time and vehicle and the "
        "caller said yes."
    )


class RescheduleArgs(_Args):
    appointment_id: int = Field(description="From list_appointments.")
    date: str = Field(description="New date, YYYY-MM-DD.")
    time: str = Field(description="New time, HH:MM (24 h).")
    confirmed: bool = Field(description="True only after the caller agreed to the read-back.")


class CancelArgs(_Args):
    appointment_id: int = Field(description="From list_appointments.")
    confirmed: bool = Field(description="True only after the caller confirmed the cancellation.")


class VerifyArgs(_Args):
    fact: str = Field(
        min_length=1,
        max_length=80,
        description="What the caller said to prove who they are: their licence plate, the "
        "last 6 characters of their VIN, or the service they have booked.",
    )


class CheckCodeArgs(_Args):
    code: str = Field(
        min_length=1, max_length=40, description="The code the caller read out or keyed in."
    )


class SearchFaqArgs(_Args):
    query: str = Field(description="The caller's question, in their words.")


class HoursArgs(_Args):
    date: str | None = Field(default=None, description="YYYY-MM-DD, for one day's hours.")


class HumanArgs(_Args):
    reason: str = Field(description="Why the caller wants a person, in a few words.")


class CallbackArgs(_Args):
    preferred_window: str = Field(
        description='When the caller wants to be called back, in their words, e.g. "tomorrow '
        'morning" or "after 5 pm today".'
    )
    reason: str = Field(description="What the callback is about, in a few words.")


class EndCallArgs(_Args):
    reason: str | None = Field(default=None, description="Why the call is ending.")
