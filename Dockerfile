# syntax=docker/dockerfile:1
# livecommerce: one image for every process (gateway, workers, migrations).
#
#   docker build -t livecommerce .
#   # lc.env: LC_REDIS_URL, LC_DATABASE_URL, LC_SECRET (the same >= 32 bytes everywhere, e.g.
#   # `python3 -c 'import secrets; print(secrets.token_hex(32))'`); no secret is built in, and
#   # the gateway and workers exit with code 2 and a one-line error without one
#   docker run --rm --env-file lc.env livecommerce livecommerce db upgrade     # once per deploy
#   docker run -d --env-file lc.env -e LC_NODE_ID=gw1 -p 8080:8080 livecommerce  # a gateway
#   docker run -d --env-file lc.env livecommerce livecommerce worker orders       # a worker
#
# Multi-stage: the build stage compiles wheels for the project and its dependencies (uvloop,
# hiredis, asyncpg ...); the runtime stage installs only those wheels, runs as an
# unprivileged user, and has no compiler, pip cache or source tree. See docs/deploy.md.

ARG PYTHON=3.11

FROM python:${PYTHON}-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN pip install --upgrade pip wheel
# dependencies first (this layer is cached until pyproject.toml changes) ...
COPY pyproject.toml README.md ./
RUN mkdir -p livecommerce gateway workers \
 && touch livecommerce/__init__.py gateway/__init__.py workers/__init__.py \
 && pip wheel --wheel-dir /wheels . \
 && rm -f /wheels/livecommerce-*.whl
# ... then the project itself (Lua scripts, data files and the static pages are package data)
COPY livecommerce ./livecommerce
COPY gateway ./gateway
COPY workers ./workers
RUN pip wheel --no-deps --wheel-dir /wheels .

FROM python:${PYTHON}-slim AS runtime
LABEL org.opencontainers.image.title="livecommerce" \
      org.opencontainers.image.description="Real-time backend for live-stream commerce: WebSocket gateway and workers" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN useradd --create-home --uid 10001 --user-group lc
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels livecommerce
USER lc
WORKDIR /home/lc
# LC_HOST 0.0.0.0: reachable from the load balancer; LC_NODE_ID must be unique per gateway
# (set it per container; the default n<pid> collides across containers, every pid being 1).
# No LC_SECRET here (never bake one into an image) and no LC_TEST_COINS (viewers do not top
# up their own wallets in production).
ENV LC_HOST=0.0.0.0 LC_PORT=8080 LC_LOG_JSON=true
EXPOSE 8080
# Liveness of the process. Load balancers use /readyz instead (503 while Redis is
# unreachable or while the gateway drains after SIGTERM). Workers have no HTTP port: run
# them with --no-healthcheck or override the check.
# a worker is checked on its metrics port (LC_WORKER_METRICS_PORT, when set and not 0), a gateway on LC_PORT
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
  CMD ["python", "-c", "import os, sys, urllib.request as u; sys.exit(0 if u.urlopen('http://127.0.0.1:%s/healthz' % (os.environ.get('LC_WORKER_METRICS_PORT', '0').strip('0') and os.environ['LC_WORKER_METRICS_PORT'] or os.environ.get('LC_PORT', '8080')), timeout=2).status == 200 else 1)"]
# SIGTERM: the gateway answers /readyz 503, closes its WebSockets with 1012 (clients
# reconnect to another node with since=) and exits within ~12 s; give it 30 s.
STOPSIGNAL SIGTERM
CMD ["livecommerce", "gateway"]
