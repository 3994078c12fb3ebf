"""JSON Schemas of Twilio's REST resources, from the official OpenAPI description.

``data/twilio_api_v2010_calls.json`` is a vendored subset of twilio-oai's
``twilio_api_v2010.json`` (source commit and MIT licence noted in the file and in
``data/TWILIO_OAI_LICENSE``): the Call, Conference, Participant and Message resources, their
enums, list pages and the Calls create/update and Messages create request bodies. Tests (here and in services that
talk to the simulator) validate REST answers against it without the full 1.8 MB spec,
which is not in the repository.

OpenAPI 3.0 is not quite JSON Schema: ``nullable: true`` becomes a ``"null"`` type and
``#/components/schemas/X`` references become ``#/$defs/X``, so that any draft 2020-12
validator (``jsonschema.Draft202012Validator``) can check a resource::

    validator = jsonschema.Draft202012Validator(resource_schema("api.v2010.account.call"))
    validator.validate(call_json)
"""

from __future__ import annotations

import copy
import functools
import importlib.resources
import json
from typing import Any

__all__ = ["CALL", "CONFERENCE", "MESSAGE", "PARTICIPANT", "resource_schema", "schema_names"]

CALL = "api.v2010.account.call"
CONFERENCE = "api.v2010.account.conference"
PARTICIPANT = "api.v2010.account.conference.participant"
MESSAGE = "api.v2010.account.message"

# Enum properties Twilio sends as null until they apply (a live conference has no end
# reason). OpenAPI 3.0 ignores siblings of $ref, so twilio-oai cannot mark them nullable.
_NULL_UNTIL_SET = {(CONFERENCE, "reason_conference_ended")}


@functools.cache
def _components() -> dict[str, Any]:
    path = importlib.resources.files("dealerline_sim") / "data" / "twilio_api_v2010_calls.json"
    doc = json.loads(path.read_text(encoding="utf-8"))
    schemas: dict[str, Any] = doc["components"]["schemas"]
    return schemas


def schema_names() -> list[str]:
    return sorted(_components())


def _convert(node: Any) -> Any:
    if isinstance(node, list):
        return [_convert(x) for x in node]
    if not isinstance(node, dict):
        return node
    out = {k: _convert(v) for k, v in node.items() if k != "nullable"}
    ref = out.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
        out["$ref"] = "#/$defs/" + ref.rsplit("/", 1)[1]
    if node.get("nullable"):
        if "type" in out:
            kind = out["type"]
            out["type"] = [*kind, "null"] if isinstance(kind, list) else [kind, "null"]
            if "enum" in out:
                out["enum"] = [*out["enum"], None]
        else:  # a nullable $ref
            out = {"anyOf": [out, {"type": "null"}]}
    return out


def resource_schema(name: str, *, strict: bool = True) -> dict[str, Any]:
    """A draft 2020-12 JSON Schema for the component ``name``; ``strict`` also demands
    every property the resource defines and nothing else (Twilio always sends them all)."""
    components = _components()
    if name not in components:
        raise KeyError(f"{name!r} is not vendored; have {schema_names()}")
    schema: dict[str, Any] = _convert(copy.deepcopy(components[name]))
    for owner, prop in _NULL_UNTIL_SET:
        if owner == name and prop in schema.get("properties", {}):
            schema["properties"][prop] = {"anyOf": [schema["properties"][prop], {"type": "null"}]}
    if strict and "properties" in schema:
        schema["required"] = sorted(schema["properties"])
        schema["additionalProperties"] = False
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$defs"] = {k: _convert(copy.deepcopy(v)) for k, v in components.items()}
    return schema
