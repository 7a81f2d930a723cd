# One image for every certctl-notify role; compose.yaml picks the command.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY certctl_notify ./certctl_notify
COPY workers ./workers
COPY api ./api
COPY cli ./cli
COPY migrations ./migrations
RUN pip install --no-cache-dir . && useradd --system --home /app certctl && mkdir -p /app/var/metrics && chown -R certctl /app/var
USER certctl
ENV CERTCTL_DATA_DIR=/app/var
