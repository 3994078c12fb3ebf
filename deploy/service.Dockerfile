# syntax=docker/dockerfile:1
# One image recipe for the five CPU services (gateway, agent, escalation, dashboard-api,
# aftercall); the GPU speech workers keep their own (services/stt, services/tts: CUDA base,
# model wheels). `deploy/build_images.py` builds each with the right arguments:
#
#   docker build -f deploy/service.Dockerfile --build-arg SERVICE=agent \
#     --build-arg ENV_PREFIX=AGENT --build-arg HTTP_PORT=8084 -t dealerline/agent:0.1.0 .
#
# Build from the repository root (the context must hold uv.lock and libs/common). Only
# libs/common and services/$SERVICE are installed (uv sync --package), from the lock.
# WEB_UI=true (dashboard-api) also builds the staff web UI (services/dashboard-api/web,
# Vite + React) from its package-lock.json in a Node stage; only its static files (dist)
# reach the runtime image, at /app/web (DASHBOARD_WEB_DIR).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG NODE_IMAGE=node:22-bookworm-slim
ARG WEB_UI=false

FROM ${NODE_IMAGE} AS web-true
WORKDIR /web
# npm dependencies first, in their own layer: rebuilt only when the lock changes.
COPY services/dashboard-api/web/package.json services/dashboard-api/web/package-lock.json ./
RUN --mount=type=cache,target=/root/.npm \
    npm ci --no-audit --no-fund
# .dockerignore keeps a local node_modules and dist out of the context, so neither replaces
# what npm ci just installed nor leaks a stale build.
COPY services/dashboard-api/web/ ./
RUN npm run build

# No web UI: an empty dist, so the runtime stage's copy is the same for every service.
FROM ${PYTHON_IMAGE} AS web-false
RUN mkdir -p /web/dist

FROM web-${WEB_UI} AS web

# The gateway's end-of-turn model, Smart Turn v3.2, installed at build time into /app/models
# (DEALERLINE_MODEL_CACHE in the runtime image): the .onnx file out of the pinned
# pipecat-ai 1.14.0 wheel from PyPI, both sha256 checked (dealerline_common/models.py, which
# needs nothing but the standard library, so this layer is rebuilt only when that file
# changes). SMART_TURN_WHEEL: the URL of that same wheel on a mirror, for a build without
# PyPI. Nothing is downloaded at run time. The other services get an empty folder.
FROM ${PYTHON_IMAGE} AS models
ARG SERVICE
ARG SMART_TURN_WHEEL=
COPY libs/common/src/dealerline_common/models.py /tmp/dealerline_models.py
RUN mkdir -p /app/models \
    && if [ "$SERVICE" = "gateway" ]; then \
      DEALERLINE_MODEL_CACHE=/app/models DEALERLINE_SMART_TURN_WHEEL="$SMART_TURN_WHEEL" \
        python -I /tmp/dealerline_models.py smart-turn \
      && chmod -R a+rX /app/models; \
    fi

FROM ${PYTHON_IMAGE} AS build
ARG SERVICE
ARG UV_VERSION=0.13.9
RUN test -n "$SERVICE" || { echo "--build-arg SERVICE=<folder under services/> is required"; exit 1; } \
    && pip install --no-cache-dir --disable-pip-version-check "uv==${UV_VERSION}"
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /src
# Third-party dependencies first, in their own layer: it is rebuilt only when the lock or a
# pyproject changes, not on every source edit.
COPY uv.lock pyproject.toml ./
COPY libs/common/pyproject.toml libs/common/
COPY services/${SERVICE}/pyproject.toml services/${SERVICE}/
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable --package "dealerline-${SERVICE}" --no-install-workspace
COPY libs/common/ libs/common/
COPY services/${SERVICE}/ services/${SERVICE}/
# --no-editable: the packages are copied into the venv, so the runtime stage needs no sources.
# Every service installs a `dealerline-<folder>` script; the image starts it by one name.
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable --package "dealerline-${SERVICE}" \
    && ln -s "dealerline-${SERVICE}" /app/.venv/bin/dealerline-service
COPY --from=models /app/models /app/models

FROM ${PYTHON_IMAGE} AS runtime
ARG ENV_PREFIX
ARG HTTP_PORT
RUN groupadd --system --gid 10001 dealerline \
    && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
       --shell /usr/sbin/nologin dealerline
COPY --from=build /app/.venv /app/.venv
COPY --from=build /app/models /app/models
# The built UI, served at `/` by dashboard-api: the package is installed into the venv
# (--no-editable), so the settings' default (web/dist next to the sources) does not exist
# here; DASHBOARD_WEB_DIR points at the copy (empty in the other images).
COPY --from=web /web/dist /app/web
# The health check reads the port the service really listens on: ${ENV_PREFIX}HTTP_PORT when
# it is set at run time, else HTTP_PORT, the service's default (dealerline_common.probe).
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    XDG_CACHE_HOME=/tmp/.cache \
    DEALERLINE_MODEL_CACHE=/app/models \
    DEALERLINE_PORT_ENV=${ENV_PREFIX}HTTP_PORT \
    DEALERLINE_HTTP_PORT=${HTTP_PORT} \
    DASHBOARD_WEB_DIR=/app/web
WORKDIR /app
USER 10001:10001
EXPOSE ${HTTP_PORT}
# Liveness only: /readyz is false while the service drains, and an orchestrator that restarts
# "unhealthy" containers must not kill one that is finishing its work (Kubernetes uses the
# chart's probes, which read /readyz for traffic).
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD python -m dealerline_common.probe /livez || exit 1
STOPSIGNAL SIGTERM
CMD ["dealerline-service"]
