"""The standalone message builder sends what Celery's own producer sends for `reflect`."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

from reflection import message
from reflection.constants import QUEUE_NAME, TASK_NAME
from reflection.producer import make_producer

KWARGS = {"original_job_id": "7f3c", "user_id": "u42", "piece_name": "default",
          "outcome": "succeeded"}  # fmt: skip


def test_the_parts_match_celerys_message() -> None:
    """Same body, and every header and id Celery's producer sets for the task."""
    celery = make_producer("memory://").amqp.as_task_v2("t-1", TASK_NAME, args=(), kwargs=KWARGS)
    ours = message.parts(**KWARGS, task_id="t-1")
    assert json.loads(ours.body) == json.loads(json.dumps(celery.body))
    for key in ("lang", "task", "id", "root_id", "parent_id", "group", "retries", "eta",
                "expires", "timelimit", "argsrepr"):  # fmt: skip
        assert ours.headers[key] == (
            list(celery.headers[key]) if key == "timelimit" else celery.headers[key]
        ), key
    assert ours.properties["correlation_id"] == celery.properties["correlation_id"] == "t-1"
    assert (message.TASK, message.QUEUE) == (TASK_NAME, QUEUE_NAME)


def test_the_redis_envelope_is_what_kombu_lpushes() -> None:
    """The envelope's body decodes to the message, routed to the `reflection` queue."""
    doc = json.loads(message.redis_envelope(**KWARGS, task_id="t-2"))
    assert json.loads(base64.b64decode(doc["body"]))[1] == KWARGS
    assert doc["headers"]["id"] == "t-2" and doc["properties"]["body_encoding"] == "base64"
    assert doc["properties"]["delivery_info"] == {"exchange": "", "routing_key": "reflection"}
    assert doc["properties"]["delivery_tag"]


def test_the_builder_needs_nothing_but_the_standard_library(tmp_path: Path) -> None:
    """Copied on its own into a bare interpreter (-I -S: no site-packages), it runs."""
    src = Path(message.__file__).read_text()
    (tmp_path / "reflect_message.py").write_text(src)
    code = (
        f"import sys; sys.path.insert(0, {str(tmp_path)!r}); import reflect_message as m; "
        "print(m.redis_envelope(original_job_id='j', user_id='u', piece_name='p', "
        "outcome='failed'))"
    )
    cmd = [sys.executable, "-I", "-S", "-c", code]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["headers"]["task"] == "reflect"
