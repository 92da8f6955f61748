FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY service ./service
RUN pip install --no-cache-dir . \
    && useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin resync \
    && mkdir -p /data && chown resync:resync /data
# glibc's malloc arenas: 2, not 8 per core (the service also sets it at start; the environment covers every
# process, uvicorn workers and normalising workers included, before their first thread).
ENV RESYNC_DB=/data/app.db \
    MALLOC_ARENA_MAX=2 \
    PYTHONUNBUFFERED=1
USER resync
VOLUME ["/data"]
EXPOSE 8000
CMD ["python", "-m", "service", "serve", "--host", "0.0.0.0", "--port", "8000"]
