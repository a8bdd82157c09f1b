"""Every setting has a row in the README's configuration table."""

from __future__ import annotations

from pathlib import Path

from reflection.settings import Settings

README = Path(__file__).resolve().parents[2] / "README.md"


def test_every_setting_is_in_the_readme_table() -> None:
    text = README.read_text()
    missing = [
        name
        for name in (f"REFLECTION_{field.upper()}" for field in Settings.model_fields)
        if f"| `{name}` |" not in text
    ]
    assert not missing, f"add these to README, Configuration: {missing}"
