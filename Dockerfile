# Production image: gunicorn serves the web app; the same image runs `python manage.py db_worker`.
# Build: docker build -t ceht-review .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DJANGO_SETTINGS_MODULE=webapp.settings \
    DATA_DIR=/var/lib/ceht \
    MEDIA_ROOT=/var/lib/ceht/media \
    STATIC_ROOT=/app/staticfiles

WORKDIR /app

# Fonts for the PNG figures: resvg (the resvg-py wheel) draws text only with installed fonts,
# and the slim image has none.
RUN apt-get update \
    && apt-get install --no-install-recommends -y fonts-dejavu-core \
    && rm -rf /var/lib/apt/lists/*

# The CPU build of torch first, from the PyTorch CPU index: the default index would install
# the multi-gigabyte CUDA build. requirements.txt then finds torch==2.13.0 already installed.
COPY requirements.txt ./
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0 \
    && pip install -r requirements.txt

RUN useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin ceht \
    && mkdir -p /var/lib/ceht/media \
    && chown -R ceht /var/lib/ceht

COPY --chown=ceht . .

# collectstatic needs the settings to load, but no database and no real secret key.
RUN SECRET_KEY=collectstatic-only-not-used-at-runtime python manage.py collectstatic --no-input

USER ceht
VOLUME ["/var/lib/ceht"]
EXPOSE 8000

HEALTHCHECK --interval=30s --timeout=5s --start-period=30s \
    CMD python scripts/healthcheck.py

# Web: migrations run from a one-off container or the compose `migrate` service, not here,
# so several web containers can start at once.
CMD ["gunicorn", "webapp.wsgi", "--bind", "0.0.0.0:8000", "--workers", "3", "--access-logfile", "-"]
