"""The base of every wire message and the helpers that read and write one
(:mod:`.messages` re-exports them; the rules are in its docstring)."""

from __future__ import annotations

import time
import uuid
from typing import TypeVar

from pydantic import BaseModel, ConfigDict

META_HEADER = "Dl-Meta"


def new_id(prefix: str) -> str:
    """A short unique id such as ``utt_3f2a…``; safe inside a NATS subject."""
    return f"{prefix}_{uuid.uuid4().hex[:16]}"


def now() -> float:
    return time.time()


class Wire(BaseModel):
    """Base of every wire message: strict about unknown fields, JSON in and out."""

    model_config = ConfigDict(extra="forbid")

    def dumps(self) -> bytes:
        return self.model_dump_json().encode()

    def header(self) -> dict[str, str]:
        """This model as the ``Dl-Meta`` header of a message whose payload is audio."""
        return {META_HEADER: self.model_dump_json()}


W = TypeVar("W", bound=Wire)


def loads(model: type[W], data: bytes | str) -> W:
    """Parse one message of a known model (raises pydantic.ValidationError)."""
    return model.model_validate_json(data)


def from_header(model: type[W], headers: dict[str, str] | None) -> W:
    """Parse the ``Dl-Meta`` header of an audio message."""
    if not headers or META_HEADER not in headers:
        raise ValueError(f"message has no {META_HEADER} header")
    return model.model_validate_json(headers[META_HEADER])
