# One image for the worker, Flower, migrations and the scripted LLM (docker compose).
#
# The base image is pinned by its exact version tag. Pin it by digest as well
# (python:3.11.14-slim-bookworm@sha256:...) where a registry can be reached to resolve
# it; none could where this file was written, so no digest is made up here. Move the
# tag deliberately, with a refreshed requirements.lock (scripts/lock.sh).
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY reflection ./reflection
COPY tasks ./tasks
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /dist .

FROM ${PYTHON_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# Dependencies exactly as locked (versions and file hashes), then the worker's wheel
# without resolving anything again: the same install on every build.
COPY requirements.lock /tmp/requirements.lock
RUN pip install --require-hashes -r /tmp/requirements.lock && rm /tmp/requirements.lock
COPY --from=wheel /dist/ /tmp/dist/
RUN pip install --no-deps /tmp/dist/*.whl && rm -rf /tmp/dist
RUN useradd --create-home --uid 10001 reflection && mkdir -p /data/users \
    && chown reflection /data/users
USER reflection
WORKDIR /home/reflection
# Broker, lock Redis and Postgres reachable from here (README, Operations); every
# container of the image runs it unless its compose service says otherwise.
# Prometheus metrics of the worker (REFLECTION_METRICS_PORT; README, Operations, Metrics).
EXPOSE 9808
HEALTHCHECK --interval=30s --timeout=20s --start-period=30s --retries=3 \
    CMD ["reflection", "health"]
CMD ["celery", "-A", "tasks", "worker", "-Q", "reflection", "--pool", "threads", "--concurrency", "50", "--prefetch-multiplier", "1", "--loglevel", "INFO"]
