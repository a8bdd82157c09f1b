"""The evaluation suite: scenarios as data (`scenarios/` beside this file, shipped in the
package), run through the worker's own stages and scored by deterministic checks
(`reflection eval`, README)."""
