"""The LLM client and :class:`LlmCaller`, which keeps the latency promise of every step:
a slow or failing call is retried once, then the model is asked for a short apology, and
only a model that never answered leaves the configured last-resort sentence."""

from __future__ import annotations

import asyncio
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    SystemMessage,
)
from langchain_core.messages.utils import message_chunk_to_message
from langchain_openai import ChatOpenAI

from dealerline_common.logs import get_logger

from .metrics import AgentMetrics
from .settings import AgentSettings
from .turn_record import TurnRecord

log = get_logger(__name__)

# Marks an assistant message whose text was not streamed token by token (the last-resort
# apology): the service speaks it when the node finishes.
UNSTREAMED = "dl_unstreamed"


def build_llm(settings: AgentSettings, *, timeout_s: float | None = None) -> ChatOpenAI:
    return ChatOpenAI(
        base_url=settings.llm_base_url,
        model=settings.llm_model,
        api_key=settings.api_key(),
        temperature=settings.llm_temperature,
        timeout=timeout_s or settings.llm_timeout_s,
        # Retries are ours (LlmCaller): one, bounded by the first-token timeout.
        max_retries=0,
        streaming=True,
        use_responses_api=False,
    )


class LlmUnavailableError(RuntimeError):
    """The model did not answer in time, twice."""


class LlmCaller:
    """One LLM step that never leaves the caller in silence.

    The main call must produce its first token within ``llm_first_token_timeout_s``; a
    call that fails or is slow before its first token is retried once. After that a
    fallback asks the model for a one-sentence apology with a short timeout, so the words
    still come from the model when it answers at all. If even that fails, the apology the
    model wrote the last time the fallback worked is spoken (``cached``); only a service
    whose model has never answered says the configured last-resort sentence.
    """

    def __init__(self, llm: BaseChatModel, settings: AgentSettings, metrics: AgentMetrics):
        self.llm = llm
        self.settings = settings
        self.metrics = metrics
        self.cached_apology: str | None = None

    async def call(
        self, model: Any, messages: list[BaseMessage], record: TurnRecord | None
    ) -> AIMessage:
        attempts = 1 + self.settings.llm_retries
        for attempt in range(attempts):
            streamed = False
            try:
                return await self._stream(model, messages, self.settings.llm_first_token_timeout_s)
            except asyncio.CancelledError:
                raise
            except _Streamed as exc:
                # Words already reached the caller: a retry would say them twice.
                streamed = True
                cause: BaseException = exc.__cause__ or exc
            except Exception as exc:
                cause = exc
            if record is not None:
                record.llm_failures += 1
            kind = "timeout" if isinstance(cause, TimeoutError) else type(cause).__name__
            self.metrics.llm_failures.labels(kind).inc()
            log.warning(
                "llm call failed",
                attempt=attempt + 1,
                of=attempts,
                error=repr(cause),
                after_tokens=streamed,
            )
            if streamed:
                break
        return await self._fallback(record)

    async def _stream(self, model: Any, messages: list[BaseMessage], first_s: float) -> AIMessage:
        stream = model.astream(messages).__aiter__()
        try:
            first: AIMessageChunk = await asyncio.wait_for(anext(stream), first_s)
        except StopAsyncIteration:
            return AIMessage(content="")
        acc = first
        try:
            async with asyncio.timeout(self.settings.llm_timeout_s):
                async for chunk in stream:
                    acc = acc + chunk
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise _Streamed from exc
        message = message_chunk_to_message(acc)
        assert isinstance(message, AIMessage)
        return message

    async def _fallback(self, record: TurnRecord | None) -> AIMessage:
        prompt = [
            SystemMessage(
                "You are the receptionist on a live phone call. A system problem delayed "
                "your answer. In one short spoken sentence, apologise and ask the caller to "
                "say that again. No markdown."
            ),
            HumanMessage("Apologise briefly."),
        ]
        try:
            message = await self._stream(self.llm, prompt, self.settings.llm_fallback_timeout_s)
            text = message.content if isinstance(message.content, str) else ""
            if text.strip():
                self.cached_apology = text.strip()
                if record is not None:
                    record.fallback = "model"
                self.metrics.llm_fallbacks.labels("model").inc()
                return AIMessage(content=text)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error("llm fallback failed", error=repr(exc))
        kind = "cached" if self.cached_apology else "last_resort"
        if record is not None:
            record.fallback = kind
        self.metrics.llm_fallbacks.labels(kind).inc()
        text = self.cached_apology or self.settings.last_resort_apology
        return AIMessage(content=text, additional_kwargs={UNSTREAMED: True})


class _Streamed(Exception):
    """The stream failed after tokens were emitted."""
