# Face search Telegram bot. Build: docker build -t facesearch-bot .
# Run:   docker run -e BOT_TOKEN=... -v facesearch-data:/data -v facesearch-gallery:/gallery facesearch-bot
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    DATA_DIR=/data \
    GALLERY_DIR=/gallery \
    MODELS_DIR=/app/models

WORKDIR /app

# Extras: milvus (VECTOR_STORE_URI=http://milvus:19530, as deploy/compose.yaml uses); add gpu for CUDA embedding
# (docker build --build-arg EXTRAS=milvus,gpu) or distributed for `index --ray`.
ARG EXTRAS=milvus

# Dependencies first (cached layer), then the code.
COPY pyproject.toml README.md ./
COPY engine ./engine
COPY bot ./bot
RUN pip install ".[${EXTRAS}]" && useradd --create-home --uid 10001 bot

COPY alembic.ini ./
COPY migrations ./migrations

# Weights (checksums verified) and the sample gallery, fetched at build time. `models fetch` writes the
# gallery to DATA_DIR/sample-gallery; it is moved to GALLERY_DIR, which a volume can replace.
RUN mkdir -p /data /gallery /app/models \
    && python -m engine models fetch \
    && cp -a /data/sample-gallery/. /gallery/ && rm -rf /data/sample-gallery \
    && chown -R bot:bot /data /gallery

USER bot
# Indexes, the SQLite database and reports; the gallery (one folder per person).
VOLUME ["/data", "/gallery"]

CMD ["python", "-m", "bot"]
