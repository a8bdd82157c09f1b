"""Transport and deployment: JSON only on the wire (pickle refused), Flower behind basic
auth, and no credential in any default configuration file."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import yaml
from kombu.exceptions import ContentDisallowed
from kombu.serialization import dumps, loads, prepare_accept_content

from reflection.secrets import find_secrets
from reflection.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def test_worker_accepts_json_only() -> None:
    """celeryconfig: JSON for tasks, results, events; nothing else accepted."""
    from tasks import celeryconfig
    from tasks.app import app

    assert celeryconfig.accept_content == ["json"]
    assert celeryconfig.task_serializer == "json" == celeryconfig.result_serializer
    assert celeryconfig.event_serializer == "json"
    assert list(app.conf.accept_content) == ["json"]


class _Boom:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (print, ("pickle payload executed",))


def test_kombu_refuses_a_pickle_message() -> None:
    """A pickled body is refused before it is deserialized (ContentDisallowed)."""
    body = pickle.dumps(((), {"user_id": _Boom()}, {}))
    accept = prepare_accept_content(["json"])  # what a worker's consumer uses
    with pytest.raises(ContentDisallowed):
        loads(body, "application/x-python-serialize", "binary", accept=accept)
    with pytest.raises(ContentDisallowed):
        loads(b"!!python/object:os.system", "application/x-yaml", "utf-8", accept=accept)
    content_type, encoding, data = dumps({"a": 1}, serializer="json")
    assert loads(data, content_type, encoding, accept=accept) == {"a": 1}


def test_flower_is_behind_basic_auth_without_a_default_password() -> None:
    """docker compose: Flower needs FLOWER_USER/FLOWER_PASSWORD (no default), given in
    FLOWER_BASIC_AUTH (not on its command line, where `ps` shows it), loopback port."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    flower = compose["services"]["flower"]
    auth = flower["environment"]["FLOWER_BASIC_AUTH"]
    assert auth.startswith("${FLOWER_USER:?") and "${FLOWER_PASSWORD:?" in auth
    assert "PASSWORD" not in " ".join(flower["command"])
    assert all(p.startswith("127.0.0.1:") for p in flower["ports"])
    pg = compose["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"]
    assert pg.startswith("${POSTGRES_PASSWORD:?")


@pytest.mark.parametrize(
    "name",
    ["docker-compose.yml", ".env.example", "tasks/celeryconfig.py", "alembic.ini", "Dockerfile"],
)
def test_no_credential_in_default_config(name: str) -> None:
    """No default configuration file holds a credential."""
    text = (ROOT / name).read_text()
    assert find_secrets(text) == [], name
    if name == ".env.example":
        values = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
        assert values["POSTGRES_PASSWORD"] == values["FLOWER_PASSWORD"] == ""
        assert values["REFLECTION_LLM_API_KEY"] == ""


def test_settings_have_no_default_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the environment, the LLM key is empty and never in the settings' repr."""
    monkeypatch.delenv("REFLECTION_LLM_API_KEY", raising=False)
    assert Settings(_env_file=None).llm_api_key.get_secret_value() == ""
    key = "sk-abcdefghijklmnopqrstuvwxyz012345"
    with_key = Settings(_env_file=None, llm_api_key=key)
    assert key not in repr(with_key) and key not in str(with_key.model_dump())
