# syntax=docker/dockerfile:1
# One image for all three services; the command picks the service:
#   python -m services.ingest run --role all      (port 8001)
#   python -m services.scheduler run              (port 8002)
#   python -m services.dispatcher run             (port 8003)
#   python -m services.<name> migrate, python -m services.scheduler load-journeys
#   python -m rebound dlq list|replay TOPIC        (dead letters)
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/rebound/bin:$PATH
RUN python -m venv /opt/rebound
WORKDIR /src
# Locked dependencies first, so a code change does not reinstall them.
COPY requirements.lock ./
RUN pip install --require-hashes -r requirements.lock
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY services ./services
COPY rebound ./rebound
# Everything the services read at run time (migrations, journeys, templates, schemas) is
# package data, so the image runs from the installed package and holds no source tree.
RUN pip install --no-deps . \
    && cd / && python -c "import services.ingest.__main__, services.scheduler.__main__, \
services.dispatcher.__main__, shared.schemas, rebound.__main__"

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="rebound" \
      org.opencontainers.image.description="Rebound retention engine: ingest, scheduler, dispatcher" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/rebound/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    REBOUND_INGEST_HTTP_HOST=0.0.0.0 \
    REBOUND_INGEST_WORKERS=0 \
    REBOUND_SCHEDULER_HTTP_HOST=0.0.0.0 \
    REBOUND_DISPATCHER_HTTP_HOST=0.0.0.0
RUN groupadd --system --gid 10001 rebound \
    && useradd --system --uid 10001 --gid rebound --home-dir /home/rebound --create-home \
       --shell /usr/sbin/nologin rebound
COPY --from=build /opt/rebound /opt/rebound
WORKDIR /home/rebound
USER 10001:10001
EXPOSE 8001 8002 8003
CMD ["python", "-m", "services.ingest", "run", "--role", "all"]
