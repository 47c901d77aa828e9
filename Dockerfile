# The project's own services (web, stream workers, consumers) for docker-compose users.
FROM python:3.11-slim
WORKDIR /app
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 LPT_HOME=/var/lib/lpt LPT_LOG_FORMAT=json
COPY pyproject.toml README.md ./
COPY lpt ./lpt
COPY schemas ./schemas
COPY producers ./producers
COPY streams ./streams
COPY consumers ./consumers
COPY api ./api
COPY reference ./reference
COPY identity ./identity
RUN pip install --no-cache-dir . && mkdir -p /var/lib/lpt
USER nobody
ENTRYPOINT ["lpt"]
CMD ["serve"]
