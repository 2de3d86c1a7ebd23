# llm-router as a container: docker build -t llm-router . && docker run -p 8080:8080 llm-router
# Serves /etc/llm-router/router.yaml (mount your own over it, or point ROUTER_CONFIG elsewhere).

ARG PYTHON_IMAGE=python:3.12.8-slim-bookworm

# ---- build: install the package and its dependencies into a virtual environment ----------
FROM ${PYTHON_IMAGE} AS build
ENV VIRTUAL_ENV=/opt/llm-router \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY app/ app/
COPY routers/ routers/
COPY providers/ providers/
COPY policies/ policies/
RUN python -m venv "$VIRTUAL_ENV" \
    && "$VIRTUAL_ENV/bin/pip" install --no-cache-dir . \
    && "$VIRTUAL_ENV/bin/pip" uninstall --yes pip

# ---- run: the virtual environment alone, as an unprivileged user --------------------------
FROM ${PYTHON_IMAGE}
RUN useradd --system --no-log-init --uid 10001 --user-group \
        --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin router
COPY --from=build /opt/llm-router /opt/llm-router
COPY deploy/router.yaml /etc/llm-router/router.yaml
ENV PATH=/opt/llm-router/bin:$PATH \
    ROUTER_CONFIG=/etc/llm-router/router.yaml \
    ROUTER_PORT=8080 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER 10001:10001
EXPOSE 8080
# The slim image has no curl: ask /healthz with the standard library.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('ROUTER_PORT', '8080'), timeout=2)"]
ENTRYPOINT ["llm-router", "serve", "--host", "0.0.0.0"]
