# redisched: `docker compose up` (docker-compose.yml) runs it next to Redis, Postgres and
# RabbitMQ. Alone (`docker run -p 8000:8000 redisched`) it starts its embedded Valkey and
# Postgres under /data.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    REDISCHED_DATA_DIR=/data

WORKDIR /src
COPY pyproject.toml README.md ./
COPY lua ./lua
COPY redisched ./redisched
RUN pip install . \
 && useradd --system --user-group --uid 10001 --no-create-home --home-dir /nonexistent redisched \
 && mkdir -p /data && chown redisched:redisched /data

# Not root: the embedded Postgres would otherwise need a second system user.
USER redisched
WORKDIR /data
VOLUME /data
EXPOSE 8000

HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=2)"]

CMD ["redisched", "serve"]
