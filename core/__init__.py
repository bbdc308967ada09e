"""chatrelay's platform-agnostic core: LLM streams, the reply engine, pacing and state."""
