"""Developer tools for tests and the demo (a scripted OpenAI-compatible LLM server)."""
