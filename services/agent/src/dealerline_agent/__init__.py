"""The dealerline agent: one LangGraph agent that answers the caller, sentence by sentence."""

from .service import AgentService
from .settings import AgentSettings

__all__ = ["AgentService", "AgentSettings"]
