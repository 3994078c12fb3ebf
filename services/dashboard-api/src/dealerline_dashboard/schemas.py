"""The REST API's request and response bodies (what ``/openapi.json`` documents).

Points in time are epoch seconds (floats), like the events' ``at``; appointment times are
ISO 8601 in the dealership's timezone (what a person reads as "9:00").
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

Role = Literal["sales", "service", "manager"]


class StaffOut(BaseModel):
    id: int
    name: str
    role: str
    email: str | None
    on_duty: bool
    hunt_order: int
    phone: str | None = Field(description="masked unless the viewer is a manager or it is theirs")


class LoginIn(BaseModel):
    email: str = Field(min_length=3, max_length=320)
    password: str = Field(min_length=1, max_length=1024)


class LoginOut(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_at: int = Field(description="epoch seconds")
    staff: StaffOut


class EscalationBrief(BaseModel):
    status: str
    staff_name: str | None
    attempt: int
    final: bool
    reason: str | None


class LiveCallOut(BaseModel):
    session_id: str
    call_sid: str | None
    caller: str | None = Field(description="caller ID, masked as the gateway published it")
    customer_name: str | None
    started_at: float
    duration_s: float
    state: Literal["ai", "escalating", "in_conference", "ended"]
    handler: str = Field(description='"AI" or the staff member in the conference')
    human_status: str
    escalation: EscalationBrief | None


class CallSummary(BaseModel):
    session_id: str
    caller: str | None
    customer_name: str | None
    started_at: float | None
    ended_at: float | None
    duration_s: float | None
    outcome: str | None
    summary: str | None


class CallPage(BaseModel):
    items: list[CallSummary]
    total: int


class TurnOut(BaseModel):
    role: str = Field(description="caller, agent, human or system")
    text: str
    at: float
    interrupted: bool


class CallDetail(CallSummary):
    turns: list[TurnOut]
    latency: list[dict[str, Any]]
    escalation: list[dict[str, Any]]
    appointments: list[dict[str, Any]]
    barge_ins: int
    end_reason: str | None
    live: bool


class AppointmentOut(BaseModel):
    id: int
    start: str
    end: str
    service: str
    customer_name: str
    vehicle: str | None
    status: str
    bay: str


class EscalationOut(BaseModel):
    session_id: str
    caller: str | None
    customer_name: str | None
    status: str
    staff_name: str | None
    attempt: int
    final: bool
    reason: str | None
    reason_text: str | None
    started_at: float
    updated_at: float


class ActionOut(BaseModel):
    accepted: bool
    detail: str


class DutyIn(BaseModel):
    on_duty: bool


class StaffPatch(BaseModel):
    on_duty: bool | None = None
    hunt_order: int | None = Field(default=None, ge=0, le=10_000)
    role: Role | None = None


class CallbackOut(BaseModel):
    id: int
    session_id: str
    name: str | None
    phone: str | None
    preferred_window: str
    reason: str
    status: Literal["open", "done"] | str
    created_at: float | None
    done_at: float | None
    done_by: int | None = Field(description="staff id")
    done_by_name: str | None


class Problem(BaseModel):
    detail: str
