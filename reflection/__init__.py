"""The reflection pipeline: load a finished job, ask an LLM what to learn, apply it safely.

The package knows nothing of Celery; `tasks/` adapts it to a worker and the CLI runs it
in-process.
"""
