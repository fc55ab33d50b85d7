# omnijourney worker and tools. Build: docker build -t omnijourney .
FROM python:3.11.10-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY schemas ./schemas
COPY src ./src
RUN pip install --no-compile . && useradd --system --uid 10001 omnijourney
COPY journeys ./journeys
COPY examples ./examples
USER omnijourney
ENV OMNIJOURNEY_JOURNEYS=/app/journeys
ENTRYPOINT ["omnijourney"]
CMD ["worker"]
