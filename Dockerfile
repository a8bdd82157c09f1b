# One image for the worker, Flower and migrations.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY reflection ./reflection
COPY tasks ./tasks
RUN pip install --no-cache-dir .
COPY celeryconfig.py alembic.ini ./
COPY migrations ./migrations
COPY pieces ./pieces
COPY evals ./evals
COPY sql ./sql
RUN useradd --create-home --uid 10001 reflection && mkdir -p /data/users \
    && chown reflection /data/users
USER reflection
CMD ["celery", "-A", "tasks", "worker", "-Q", "reflection", "--pool", "threads", "--concurrency", "50", "--prefetch-multiplier", "1", "--loglevel", "INFO"]
