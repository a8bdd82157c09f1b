"""The evaluation suite: scenarios as data (`evals/scenarios`), run through the worker's
own stages and scored by deterministic checks (`reflection eval`, README)."""
