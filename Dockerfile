# The project's own services (web, stream workers, consumers) for docker-compose users.

# Stage 1: the front-end libraries the pages serve (Leaflet for the officer map, GOV.UK Frontend
# for the public pages), exactly as web/package-lock.json pins them. Only node_modules leaves
# this stage: the final image has no Node.js.
FROM node:22-slim AS web-assets
WORKDIR /app/web
COPY web/package.json web/package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund

# Stage 2: the Python services.
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
COPY --from=web-assets /app/web/node_modules ./web/node_modules
# Editable install: the code runs from /app, so lpt.settings.PROJECT_ROOT is /app and the web
# service finds /app/web/node_modules next to its templates and static files (a plain install
# would run from site-packages, where there is no web/ directory).
RUN pip install --no-cache-dir -e . && mkdir -p /var/lib/lpt
USER nobody
ENTRYPOINT ["lpt"]
CMD ["serve"]
