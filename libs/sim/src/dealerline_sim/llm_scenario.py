"""The scripted LLM's scenario: the rules a reply is chosen by (a regex over the last user
message, or over the tool result the conversation ends with; conditions on the system
prompt, the tool answered and how often a rule may match) and how a rule reads the
conversation. The file format is described in ``dealerline_sim.llm``."""

from __future__ import annotations

import importlib.resources
import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class Segment(BaseModel):
    """Part of a reply; ``delay_ms`` is an extra pause before its first token."""

    model_config = ConfigDict(extra="forbid")

    text: str
    delay_ms: float = Field(default=0.0, ge=0)


class ScriptedToolCall(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    arguments: dict[str, Any] | str = Field(default_factory=dict)
    id: str | None = None

    def arguments_json(self) -> str:
        if isinstance(self.arguments, str):
            return self.arguments
        return json.dumps(self.arguments, separators=(",", ":"))


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    match: str = Field(default=".*", description="regex searched in the matched message")
    on: Literal["auto", "user", "tool"] = Field(
        default="auto",
        description="auto: the tool result if the last message is a tool message, "
        "else the last user message; user/tool: only when the last message is of that kind",
    )
    when_system_contains: str | None = None
    after_tool: str | None = Field(
        default=None, description="the last message is the result of this tool"
    )
    case_sensitive: bool = False
    times: int | None = Field(default=None, ge=1, description="matches only this many times")
    error_status: int | None = Field(default=None, ge=400, le=599)
    reply: str | list[Segment] | None = None
    tool_calls: list[ScriptedToolCall] = Field(default_factory=list)
    token_delay_ms: float | None = Field(default=None, ge=0)
    first_token_delay_ms: float | None = Field(default=None, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _yaml_on_key(cls, data: Any) -> Any:
        # YAML 1.1 reads a bare ``on:`` key as the boolean True.
        if isinstance(data, dict) and True in data:
            data = dict(data)
            data["on"] = data.pop(True)
        return data

    @field_validator("match")
    @classmethod
    def _compiles(cls, value: str) -> str:
        re.compile(value)
        return value

    def segments(self) -> list[Segment]:
        if self.reply is None:
            return []
        if isinstance(self.reply, str):
            return [Segment(text=self.reply)]
        return list(self.reply)

    def text(self) -> str:
        return "".join(s.text for s in self.segments())


class Scenario(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = "scripted"
    token_delay_ms: float = Field(default=0.0, ge=0)
    first_token_delay_ms: float = Field(default=0.0, ge=0)
    default: str | list[Segment] = "Sorry, I didn't catch that. Could you say it again?"
    rules: list[Rule] = Field(default_factory=list)

    @classmethod
    def from_yaml(cls, source: str | Path) -> Scenario:
        """Load a scenario from a YAML file path."""
        data = yaml.safe_load(Path(source).read_text(encoding="utf-8")) or {}
        return cls.model_validate(data)

    @classmethod
    def load(cls, name_or_path: str | Path) -> Scenario:
        """A file path, or the name (``demo``) of a scenario shipped with this package."""
        path = Path(name_or_path)
        if path.exists():
            return cls.from_yaml(path)
        packaged = (
            importlib.resources.files("dealerline_sim") / "scenarios" / f"{name_or_path}.yaml"
        )
        if packaged.is_file():
            return cls.model_validate(yaml.safe_load(packaged.read_text(encoding="utf-8")) or {})
        raise FileNotFoundError(f"no scenario file or packaged scenario named {name_or_path!r}")

    def default_rule(self) -> Rule:
        return Rule(reply=self.default)

    def pick(self, messages: list[dict[str, Any]], used: dict[int, int] | None = None) -> Rule:
        """The first rule matching the conversation, else the default."""
        return self.match(messages, used)[0]

    def first_token_delay_ms_of(self, rule: Rule) -> float:
        """The pause before a reply's first token: the rule's, else the scenario's."""
        if rule.first_token_delay_ms is not None:
            return rule.first_token_delay_ms
        return self.first_token_delay_ms

    def token_delay_ms_of(self, rule: Rule) -> float:
        """The pause between a reply's tokens: the rule's, else the scenario's."""
        return rule.token_delay_ms if rule.token_delay_ms is not None else self.token_delay_ms

    def match(
        self, messages: list[dict[str, Any]], used: dict[int, int] | None = None
    ) -> tuple[Rule, re.Match[str] | None]:
        """The first matching rule and its regex match; ``used`` counts matches per rule
        (for ``times``) and is updated."""
        last = messages[-1] if messages else {}
        last_is_tool = last.get("role") == "tool"
        tool_text = content_text(last.get("content")) if last_is_tool else None
        last_tool_name = _tool_name(messages, last) if last_is_tool else None
        user_text = next(
            (content_text(m.get("content")) for m in reversed(messages) if m.get("role") == "user"),
            "",
        )
        system_text = "\n".join(
            content_text(m.get("content"))
            for m in messages
            if m.get("role") in ("system", "developer")
        )
        for index, rule in enumerate(self.rules):
            if rule.on == "tool" and not last_is_tool:
                continue
            if rule.on == "user" and last_is_tool:
                continue
            if rule.after_tool is not None and rule.after_tool != last_tool_name:
                continue
            if rule.when_system_contains and rule.when_system_contains not in system_text:
                continue
            if rule.times is not None and used is not None and used.get(index, 0) >= rule.times:
                continue
            target = tool_text if last_is_tool and tool_text is not None else user_text
            flags = 0 if rule.case_sensitive else re.IGNORECASE
            found = re.search(rule.match, target, flags | re.DOTALL)
            if found:
                if used is not None:
                    used[index] = used.get(index, 0) + 1
                return rule, found
        return self.default_rule(), None


def _tool_name(messages: list[dict[str, Any]], tool_message: dict[str, Any]) -> str | None:
    call_id = tool_message.get("tool_call_id")
    for m in reversed(messages):
        for tc in m.get("tool_calls") or []:
            if tc.get("id") == call_id:
                return str(tc.get("function", {}).get("name"))
    return None


def content_text(content: Any) -> str:
    """The text of an OpenAI message ``content`` (a string or a list of parts)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(p.get("text", ""))
            for p in content
            if isinstance(p, dict) and p.get("type") == "text"
        )
    return str(content)
