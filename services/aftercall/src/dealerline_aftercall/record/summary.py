"""The call summary, written by the LLM through the fleet's OpenAI-compatible endpoint.

A short timeout and a few tenacity retries per try: a summary is nice to have, never a
reason to hold the record back (the keeper writes the record without one and tries again
later).
"""

from __future__ import annotations

from langchain_core.messages import HumanMessage, SystemMessage
from langchain_openai import ChatOpenAI
from tenacity import AsyncRetrying, stop_after_attempt, wait_exponential

from ..settings import AftercallSettings
from .facts import SUMMARY_SYSTEM

MAX_SUMMARY_CHARS = 2000


class SummaryError(RuntimeError):
    """The LLM gave no usable summary."""


class Summarizer:
    def __init__(self, settings: AftercallSettings) -> None:
        key = settings.llm_api_key.get_secret_value() if settings.llm_api_key else None
        self.attempts = settings.summary_attempts
        self.llm = ChatOpenAI(
            base_url=settings.llm_base_url,
            model=settings.llm_model,
            # Self-hosted endpoints (vLLM, the scripted sim) need no key, but the OpenAI
            # client refuses to start without one.
            api_key=key or "not-needed",
            temperature=0.2,
            timeout=settings.llm_timeout_s,
            max_retries=0,  # ours, below
            use_responses_api=False,
        )

    @staticmethod
    def available(settings: AftercallSettings) -> bool:
        """Whether any endpoint is configured (a base URL, or a key for OpenAI itself)."""
        return bool(settings.llm_base_url or settings.llm_api_key)

    async def summarize(self, dealership: str, call_text: str) -> str:
        messages = [
            SystemMessage(content=SUMMARY_SYSTEM.format(dealership=dealership)),
            HumanMessage(content=call_text),
        ]
        async for attempt in AsyncRetrying(
            stop=stop_after_attempt(self.attempts),
            wait=wait_exponential(multiplier=0.25, max=4.0),
            reraise=True,
        ):
            with attempt:
                reply = await self.llm.ainvoke(messages)
                text = reply.content if isinstance(reply.content, str) else ""
                text = " ".join(text.split())
                if not text:
                    raise SummaryError("the LLM answered with an empty summary")
        return text[:MAX_SUMMARY_CHARS]
