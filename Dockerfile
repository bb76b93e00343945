# ganft: one image for the API, the worker and the one-shot migration.
#
# CPU (default):  docker build -t ganft .
# CUDA:           docker build -t ganft:cuda \
#                   --build-arg BASE_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04 .
# TORCH_INDEX_URL picks the wheel index for torch==2.13.0 (e.g. PyTorch's CPU-only index for a
# small CPU image); empty means the default index, whose Linux wheel is the CUDA build.
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}

ARG TORCH_INDEX_URL=""
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    GANFT_DATA_DIR=/data

# The CUDA base images have no Python of their own; the slim Python image already does.
RUN if ! command -v python3 >/dev/null; then \
      apt-get update && apt-get install -y --no-install-recommends python3 python3-venv python3-pip \
      && rm -rf /var/lib/apt/lists/*; \
    fi \
    && python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /app
RUN pip install --upgrade pip \
    && pip install "torch==2.13.0" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
COPY pyproject.toml README.md ./
COPY api ./api
COPY worker ./worker
COPY ganft ./ganft
COPY ganft_core ./ganft_core
COPY migrations ./migrations
COPY alembic.ini ./
RUN pip install ".[demo]"

RUN useradd --create-home --uid 10001 ganft && mkdir -p /data && chown ganft /data
USER ganft
VOLUME ["/data"]
EXPOSE 8000
CMD ["uvicorn", "api.main:app", "--host", "0.0.0.0", "--port", "8000"]
