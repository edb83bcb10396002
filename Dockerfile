# nomads-cluster: slim, non-root, with a health check. Build from the repo's root:
#   docker build -t nomads-cluster .
# BASE: any image with Python 3.11 as `python` and `pip` on the PATH (CI builds on a
# Debian bookworm base it makes itself: `make containers`).
ARG BASE=python:3.11-slim
FROM ${BASE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PORT=8000

WORKDIR /app
# Dependencies first: a code change does not reinstall them. Serving's lock only (no
# training stack: about a quarter of the size), every file checked against its hash.
COPY requirements.txt .
RUN pip install --require-hashes -r requirements.txt

COPY pyproject.toml README.md app_cluster.py gunicorn.conf.py ./
COPY nomads_cluster ./nomads_cluster
COPY model ./model
RUN pip install --no-deps . \
    && useradd --system --uid 10001 --home-dir /app nomads \
    && mkdir -p /app/instance && chown nomads /app/instance

USER nomads
EXPOSE 8000
# /health answers 503 when the store is down: the container then reports unhealthy.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{os.environ[\"PORT\"]}/health', timeout=2)"]
CMD ["gunicorn", "app_cluster:app"]
