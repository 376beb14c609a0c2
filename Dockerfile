# One image for the web service (Gunicorn), the monitor, the migrate step and the broker
# config render step of compose.yml:
#   web       gunicorn -c web/gunicorn.conf.py          (the default command)
#   monitor   python manage.py monitor
#   migrate   python manage.py migrate --noinput
#   render    python mosquitto/render.py mosquitto/go-auth.conf.template OUT
# Build: docker build -t django-mqtt-service .

# --- front-end packages, pinned in package-lock.json (never a CDN) ------------------------
FROM node:22-bookworm-slim AS assets
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund --ignore-scripts && npm run -s vendor

# --- Python packages in a virtualenv, from pyproject.toml [dependency-groups] app ----------
FROM python:3.11-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/venv && /opt/venv/bin/pip install "pip>=25.1"
WORKDIR /src
COPY pyproject.toml ./
RUN /opt/venv/bin/pip install --group app

# --- runtime -------------------------------------------------------------------------------
FROM python:3.11-slim-bookworm
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    DJANGO_SETTINGS_MODULE=web.settings \
    VAR_DIR=/var/lib/mqtt-service \
    STATIC_ROOT=/app/static \
    LOG_TO_FILE=0 \
    GUNICORN_BIND=0.0.0.0:8000

# A fixed uid/gid so that secret files and volumes can be given to it from the host.
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /app --shell /usr/sbin/nologin app \
    && install -d -o app -g app -m 0750 /var/lib/mqtt-service /srv/broker-config

COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY --chown=root:root . /app
COPY --from=assets --chown=root:root /src/web/static/vendor /app/web/static/vendor

# Static files are collected into the image (read-only, served by WhiteNoise); the key only
# lets the settings load and signs nothing.
RUN SECRET_KEY=collectstatic-only-not-a-secret VAR_DIR=/tmp/build-var \
        python manage.py collectstatic --noinput --verbosity 0 \
    && rm -rf /tmp/build-var \
    && python -m compileall -q /app

USER app
EXPOSE 8000
CMD ["gunicorn", "-c", "web/gunicorn.conf.py"]
