# syntax=docker/dockerfile:1
# One image for every Pizzeria process: `docker run IMAGE serve gateway`, `... migrate`,
# `... topics create`. Build: docker build -t pizzeria .
ARG PYTHON_VERSION=3.12

# --- build: a virtual environment with the dependencies and the pizzeria wheel ----------------
FROM python:${PYTHON_VERSION}-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/pizzeria
ENV PATH=/opt/pizzeria/bin:$PATH
WORKDIR /src
# The dependencies first, in a layer of their own (rebuilt only when the lock changes), exactly
# as locked: requirements-runtime.lock, the package's own dependencies at the versions `make`
# installs (requirements.lock), each checked against its hashes.
COPY requirements-runtime.lock ./
RUN pip install --no-cache-dir --require-hashes --requirement requirements-runtime.lock
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /tmp/wheels . \
    && pip install --no-cache-dir --no-deps /tmp/wheels/pizzeria-*.whl

# --- runtime: the interpreter, the virtual environment, an unprivileged user ------------------
FROM python:${PYTHON_VERSION}-slim-bookworm AS runtime
LABEL org.opencontainers.image.title="pizzeria" \
      org.opencontainers.image.description="Event-driven pizza ordering platform: one image, every service" \
      org.opencontainers.image.licenses="MIT"
RUN groupadd --system --gid 10001 pizzeria \
    && useradd --system --uid 10001 --gid pizzeria --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin pizzeria
COPY --from=build /opt/pizzeria /opt/pizzeria
# Production by default: a container never falls back to SQLite or the SQL-log broker. Services
# listen on every interface; the only writable place they need is the var directory (traces
# when no OpenTelemetry collector is set), under /tmp so a read-only root file system works.
ENV PATH=/opt/pizzeria/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIZZERIA_MODE=production \
    PIZZERIA_HOST=0.0.0.0 \
    PIZZERIA_VAR_DIR=/tmp/pizzeria
WORKDIR /tmp
USER 10001:10001
# gateway, the services (5001-5010) and the simulated payment provider
EXPOSE 8000 5001-5010 5090
# Asks the `pizzeria serve SERVICE` process in the container for /ready on that service's port.
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-m", "pizzeria.chassis.healthcheck", "/ready"]
ENTRYPOINT ["pizzeria"]
CMD ["--help"]
