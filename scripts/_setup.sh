# Sourced by demo.sh, test.sh and .ci/run: a venv at .venv with the project installed,
# and (unless SETUP_SERVICES=0) Redis and PostgreSQL answering on loopback; test.sh also
# calls ensure_rabbitmq.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  for cand in python3.11 python3.12 python3.13 python3; do
    if command -v "$cand" >/dev/null 2>&1; then PY="$cand"; break; fi
  done
fi

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $PY"
  "$PY" -m venv .venv
fi
stamp=".venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "setup: installing the project and its dev tools into .venv"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[dev]'
  rm -f .venv/.installed-* && touch "$stamp"
fi

redis_up() { .venv/bin/python - "$1" <<'PY' >/dev/null 2>&1
import sys, redis
redis.Redis.from_url(sys.argv[1], socket_connect_timeout=2).ping()
PY
}
pg_up() { pg_isready -q -h 127.0.0.1 -p 5432 >/dev/null 2>&1; }

ensure_services() {
  local url="${REFLECTION_REDIS_URL:-redis://127.0.0.1:6379/0}"
  if ! redis_up "$url"; then
    if command -v redis-server >/dev/null 2>&1; then
      echo "setup: starting redis-server on 127.0.0.1:6379"
      mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
      redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" \
        --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log || true
      for _ in $(seq 1 50); do redis_up "$url" && break; sleep 0.2; done
    fi
  fi
  if ! pg_up && command -v pg_ctlcluster >/dev/null 2>&1; then
    echo "setup: starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
    for _ in $(seq 1 50); do pg_up && break; sleep 0.2; done
  fi
}

# RabbitMQ is needed by the tests only (the worker on the other broker, tests/e2e), in
# a virtual host of their own so that they never touch another queue of that name.
AMQP_TEST_DEFAULT="amqp://guest:guest@127.0.0.1:5672/reflection_test"
amqp_up() { .venv/bin/python - "$1" <<'PY' >/dev/null 2>&1
import sys
from kombu import Connection
with Connection(sys.argv[1], connect_timeout=2) as conn:
    conn.ensure_connection(max_retries=1)
PY
}

ensure_rabbitmq() {
  local url="${REFLECTION_TEST_AMQP_URL:-$AMQP_TEST_DEFAULT}"
  if amqp_up "$url" || [ "$url" != "$AMQP_TEST_DEFAULT" ]; then return 0; fi
  command -v rabbitmq-server >/dev/null 2>&1 || return 0
  if ! amqp_up "amqp://guest:guest@127.0.0.1:5672//"; then
    echo "setup: starting rabbitmq-server"
    rabbitmq-server -detached || true
    for _ in $(seq 1 60); do amqp_up "amqp://guest:guest@127.0.0.1:5672//" && break; sleep 0.5; done
  fi
  if ! amqp_up "$url"; then
    echo "setup: creating the RabbitMQ virtual host reflection_test"
    rabbitmqctl -q add_vhost reflection_test || true
    rabbitmqctl -q set_permissions -p reflection_test guest '.*' '.*' '.*' || true
  fi
}

# The tests check docker-compose.yml with `docker-compose config` (no Docker engine is
# needed for that); in CI a missing client is installed from Debian's packages.
ensure_compose_client() {
  command -v docker-compose >/dev/null 2>&1 && return 0
  case "${CI:-}" in 1|true|yes) ;; *) return 0 ;; esac
  if command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing docker-compose (Debian) to check docker-compose.yml"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker-compose >/dev/null 2>&1 \
      || { apt-get update -q >/dev/null 2>&1 && \
           DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker-compose >/dev/null 2>&1; } \
      || echo "setup: could not install docker-compose"
  fi
}

if [ "${SETUP_SERVICES:-1}" = "1" ]; then ensure_services; fi
