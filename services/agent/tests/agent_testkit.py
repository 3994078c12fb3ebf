"""What the agent's tool and scenario tests share: a tool run the way the graph runs it,
rows read from the dealership database, and the agent's settings on a test bus."""

from __future__ import annotations

from typing import Any

from langchain_core.messages import ToolMessage
from sqlalchemy import select

from dealerline_agent.dealership.context import ToolContext
from dealerline_agent.dealership.effects import ToolEffect
from dealerline_agent.dealership.tools import build_tools
from dealerline_agent.settings import AgentSettings
from dealerline_common.db import create_engine_from_url, session_factory


async def invoke_tool(
    name: str, call_id: str, context: ToolContext, args: dict[str, Any]
) -> tuple[str, ToolEffect]:
    """Tool ``name`` invoked as a model tool call: its text and its effect (not applied)."""
    tool = next(t for t in build_tools() if t.name == name)
    message = await tool.ainvoke(
        {"type": "tool_call", "id": call_id, "name": name, "args": args},
        config={"configurable": {"tool_context": context}},
    )
    assert isinstance(message, ToolMessage) and isinstance(message.content, str)
    return message.content, ToolEffect.model_validate(message.artifact)


async def db_rows(url: str, model: Any, *where: Any) -> list[Any]:
    """The rows of ``model`` matching ``where`` in the database at ``url``."""
    engine = create_engine_from_url(url)
    try:
        async with session_factory(engine)() as session:
            return list((await session.execute(select(model).where(*where))).scalars())
    finally:
        await engine.dispose()


def agent_settings(nats_url: str, llm_base_url: str, database_url: str) -> AgentSettings:
    """An agent on a test bus and scripted LLM: short acks and drains, memory streams."""
    return AgentSettings(
        nats_url=nats_url,
        llm_base_url=llm_base_url,
        http_host="127.0.0.1",
        http_port=0,
        js_file_storage=False,
        ack_wait_s=5.0,
        drain_timeout_s=5.0,
        database_url=database_url,
        llm_first_token_timeout_s=5.0,
    )
