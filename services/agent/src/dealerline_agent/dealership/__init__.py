"""The dealership the agent works for: its database (repository), the LLM's tools, and
the effects those tools have on the conversation state."""
