# omnijourney worker and tools. Build: docker build -t omnijourney .
FROM python:3.11.10-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY schemas ./schemas
COPY src ./src
# /data: the worker's local files (snapshots saved at a graceful stop, for a warm restart);
# compose keeps it on a named volume, which starts with this directory's owner.
RUN pip install --no-compile . && useradd --system --uid 10001 omnijourney \
    && mkdir /data && chown omnijourney /data
COPY journeys ./journeys
COPY examples ./examples
USER omnijourney
ENV OMNIJOURNEY_JOURNEYS=/app/journeys OMNIJOURNEY_DATADIR=/data
ENTRYPOINT ["omnijourney"]
CMD ["worker"]
