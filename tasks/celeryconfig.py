"""Celery configuration for the reflection worker, derived from `REFLECTION_*` settings.

It lives in the `tasks` package, so the installed app reads it from any directory
(`tasks.app` loads it by module name).

Delivery is at-least-once (late ack, requeue when a worker dies) and the pipeline makes
the effect exactly-once (claims, journal, fencing); see the README, "Delivery".
"""

from reflection.constants import QUEUE_NAME, TASK_NAME
from reflection.settings import get_settings

_s = get_settings()

broker_url = _s.broker_url
broker_connection_retry_on_startup = True
broker_transport_options = {
    # A message not acked within this many seconds is handed to another worker; it must
    # exceed the longest a task can run (task_time_limit) and any retry countdown.
    "visibility_timeout": _s.broker_visibility_timeout,
    # kombu sweeps for such messages every interval*throttle seconds (default 100 s);
    # sweep every interval instead, so a killed worker's task is back soon after the
    # visibility timeout.
    "unacked_restore_interval": max(1, min(10, _s.broker_visibility_timeout // 4)),
    "unacked_restore_throttle": 1,
}

# JSON only: a pickle payload from the network is code execution.
task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
event_serializer = "json"

task_ignore_result = True
result_backend = None
# No results are stored, so beat must schedule no `celery.backend_cleanup` (SPEC §14).
result_expires = None
task_default_queue = QUEUE_NAME
task_routes = {TASK_NAME: {"queue": QUEUE_NAME}}

task_acks_late = True
task_reject_on_worker_lost = True
# A run that ended `failed` raises ReflectionFailed after its row is written (FAILURE):
# its failure is recorded, so the message is acknowledged, not redelivered. A task killed
# at the hard time limit wrote no row (the soft limit records one 30 s earlier, unless
# that recording hung too): it is requeued like a lost worker's, and a job that keeps
# dying is failed `poison` after REFLECTION_MAX_DELIVERIES.
task_acks_on_failure = True
task_acks_on_timeout = False
worker_prefetch_multiplier = 1
worker_cancel_long_running_tasks_on_connection_loss = True
# After a lost broker connection Celery would fetch one task at a time and raise the
# prefetch with each ack; on RabbitMQ that left a threads-pool worker stalled for 90 s
# or more, with the queue ready and its AMQP frames garbled (UnexpectedFrame), until a
# second reconnect (tests/e2e/test_rabbitmq.py). Taking the full prefetch at once is
# safe: a task fetched again while its first delivery still runs is applied once all
# the same (the claim and the user lock; README, Delivery).
worker_enable_prefetch_count_reduction = False
task_time_limit = _s.task_time_limit
task_soft_time_limit = _s.soft_time_limit

# On a cold shutdown (or SIGTERM with REMAP_SIGTERM=SIGQUIT) give tasks in flight this
# long to finish, then requeue the rest at once instead of after the visibility timeout.
worker_soft_shutdown_timeout = 20.0
worker_enable_soft_shutdown_on_idle = True

# Task events (what Flower's Tasks tab shows) are off unless the worker runs with `-E`,
# as the README's command does, or Flower turns them on (it asks every 5 s): they cost
# a busy worker about a tenth of its CPU (README, Scaling), wasted when nobody reads them.
# No `task-sent` events (task_send_sent_event): the platform's publishes send none, so
# they came only from the worker's own re-sends (retries and deferrals), each one more
# publish in the pool thread (README, Scaling, Task events).
# Logging: Celery sets up the root logger's handler (its layout in text mode) and we adopt
# it in `tasks.worker` (masking, JSON). Hijacking leaves that handler the only one, and
# stray prints go through logging too, so in JSON mode every line is one JSON object.
worker_hijack_root_logger = True
worker_redirect_stdouts = True
worker_redirect_stdouts_level = "WARNING"
