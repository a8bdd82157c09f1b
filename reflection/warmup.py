"""Build at worker start what a run's first use would otherwise build.

Detectors, validators, templates, the openai SDK's platform probe (the decision's JSON
schema is built when `reflection.llm` is imported): a first run took 190 ms instead of
20. In a threads pool the first wave of runs would all build them at the same time, on
every thread, while the queue waits.
"""

from __future__ import annotations

import json
import logging
import time

from openai import OpenAI
from openai.types.chat import ChatCompletion

from reflection.evidence import ShownJob, evidence_code
from reflection.prompt import build_system_prompt
from reflection.reply import parse_decision
from reflection.secrets import mask_secrets
from reflection.settings import Settings

log = logging.getLogger(__name__)

_DECISION = {
    "reasoning": "warm-up",
    "memory_changes": [
        {
            "op": "add",
            "name": "warm-up",
            "type": "feedback",
            "description": "warm-up",
            "body": "warm-up",
            "evidence": ["warm-up"],
        }
    ],
    "piece_edit": None,
}
_COMPLETION = {
    "id": "warm-up",
    "object": "chat.completion",
    "created": 0,
    "model": "warm-up",
    "choices": [
        {
            "index": 0,
            "finish_reason": "stop",
            "message": {"role": "assistant", "content": json.dumps(_DECISION)},
        }
    ],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
}


def warm_up(settings: Settings) -> None:
    """Build the shared, lazily built parts of a run (no I/O, nothing stored)."""
    t = time.monotonic()
    mask_secrets("warm-up api_key=sk-proj-0000000000000000000000000000")
    decision = parse_decision(json.dumps(_DECISION))
    shown = ShownJob(request="warm-up", log_head="[00:00:01] user: warm-up")
    evidence_code("add", "feedback", decision.memory_changes[0].evidence, shown)
    build_system_prompt(
        max_changes=settings.max_changes_per_run, max_body_bytes=settings.max_entry_body_bytes
    )
    ChatCompletion.model_validate(_COMPLETION)
    with OpenAI(api_key="warm-up", base_url="http://127.0.0.1:9/v1") as client:
        client.platform_headers()  # probes the platform once (cached)
    log.debug("warmed up in %d ms", (time.monotonic() - t) * 1000)
