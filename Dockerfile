# syntax=docker/dockerfile:1
#
# CCGSC: one image for every role; the command chooses the role.
#
#   web (default)   python -m ccgsc.server -b 0.0.0.0 -p 8000 ccgsc.asgi:application (daphne)
#   celery          celery -A ccgsc worker -l info
#   migrations      python manage.py migrate --noinput
#   native worker   ccgsc-worker --server http://web:8000 --token ccgsc_...
#
# Build with `docker build -t ccgsc .`; compose.yaml and docs/deployment.md show the deployment.
# Configuration comes from environment variables at run time, never from the image.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- builder: /app/.venv exactly as uv.lock says, runtime dependencies only ------------------
FROM ${PYTHON_IMAGE} AS builder

ARG UV_VERSION=0.13.9
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3.11 \
    UV_PROJECT_ENVIRONMENT=/app/.venv

RUN pip install "uv==${UV_VERSION}"

WORKDIR /app

# Dependencies first, from the lock alone, so a source change does not reinstall them.
COPY pyproject.toml uv.lock ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-project

# Then the project itself (console script ccgsc-worker). It is installed editable: the venv
# points at /app, where the runtime stage puts the very same source. --reinstall-package keeps a
# cached build of an older tree (the cache mount outlives builds) from being reused.
COPY . .
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --reinstall-package ccgsc

# ---- runtime: the interpreter, the venv and the source; no uv, no build tools ----------------
# Same base image as the builder: the venv's python links to /usr/local/bin/python3.11.
FROM ${PYTHON_IMAGE} AS runtime

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/app/.venv \
    PATH="/app/.venv/bin:${PATH}" \
    PYTHONPATH=/app \
    DJANGO_SETTINGS_MODULE=ccgsc.settings

RUN groupadd --system --gid 10001 ccgsc \
    && useradd --system --uid 10001 --gid ccgsc --create-home --home-dir /home/ccgsc \
        --shell /usr/sbin/nologin ccgsc

WORKDIR /app
COPY --from=builder /app/.venv /app/.venv
COPY . /app

# Static files are collected into the image (var/staticfiles, served by whitenoise). The key and
# DEBUG=true exist only for this one command: settings refuse to load without a secret when
# DEBUG is false, and nothing here is a secret. The running container gets its own SECRET_KEY.
RUN DEBUG=true SECRET_KEY=build-only-collectstatic-key-not-used-at-run-time \
        python manage.py collectstatic --noinput \
    && mkdir -p /app/var/media /app/var/modules \
    && chown ccgsc:ccgsc /app/var /app/var/media /app/var/modules

# Source and static files stay owned by root (read-only to the app); var/ is writable for
# uploads (media), the compiled-module cache and the embedded-mode SQLite database.
USER 10001:10001

EXPOSE 8000

# Meaningful for the web role only; compose.yaml disables it for celery and the native worker.
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
    CMD ["python", "/app/deploy/healthcheck.py"]

# Worker frames may be up to 16 MiB (workers/protocol.py MAX_FRAME); daphne's default is 1 MiB.
# It reads up to twice that (MAX_WEBSOCKET_MESSAGE) so an oversized frame gets the too_large error.
# Keepalive pings every 50 s, 30 s for the pong (workers/protocol.py PING_INTERVAL, PING_TIMEOUT).
# ccgsc.server is daphne with its per-connection loops made cheap for many idle sessions.
CMD ["python", "-m", "ccgsc.server", "-b", "0.0.0.0", "-p", "8000", \
     "--websocket-max-message-size", "33554432", "--websocket-max-frame-size", "33554432", \
     "--ping-interval", "50", "--ping-timeout", "30", \
     "ccgsc.asgi:application"]
