# Face search Telegram bot. Build: docker build -t facesearch-bot .
# Run:   docker run -e BOT_TOKEN=... -v facesearch-data:/data -v facesearch-gallery:/gallery facesearch-bot
#
# Two stages. `convert` installs TensorFlow (the `convert` extra), fetches the FaceNet weights and the sample gallery
# and converts the networks to ONNX graphs, checked against Keras on real photos (`python -m engine models fetch`).
# The runtime stage installs the package without that extra and copies only the verified graphs, their manifest and
# the sample gallery: the bot and the engine run on ONNX Runtime (ENGINE_RUNTIME=onnx), with no TensorFlow in the
# image. `make image-test` builds it and drives the bot inside it through a fake Bot API.

# ---- convert: TensorFlow, the weights, the ONNX graphs (none of it ships) ----------------------------------------
FROM python:3.11-slim AS convert

ENV PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    DATA_DIR=/data \
    MODELS_DIR=/app/models

WORKDIR /app

# The dependencies alone first, read from pyproject.toml (a cached layer until it changes), then the code.
COPY pyproject.toml README.md ./
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
print('\n'.join(p['dependencies'] + p['optional-dependencies']['convert']))" > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt
COPY engine ./engine
COPY bot ./bot
RUN pip install --no-deps .

# Weights (checksums verified), the sample gallery (DATA_DIR/sample-gallery) and the ONNX graphs with their manifest.
# The runtime stage takes the graphs only if the conversion wrote them all: a missing graph fails the build here
# instead of shipping an image that cannot run.
RUN mkdir -p /data /app/models \
    && python -m engine models fetch \
    && python -c "import json, pathlib; m = pathlib.Path('/app/models'); \
graphs = json.loads((m / 'onnx.json').read_text())['graphs']; \
missing = [name for name in graphs if not (m / name).is_file()]; \
assert graphs and not missing, f'ONNX graphs not written: {missing or \"no manifest\"}'"

# ---- runtime: ONNX Runtime, no TensorFlow ----------------------------------------------------------------------
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DATA_DIR=/data \
    GALLERY_DIR=/gallery \
    MODELS_DIR=/app/models \
    ENGINE_RUNTIME=onnx

WORKDIR /app

# Extras: milvus-client (a Milvus server, VECTOR_STORE_URI=http://milvus:19530, as deploy/compose.yaml uses; milvus
# adds Milvus Lite for a .db file); distributed for `index --ray`.
# GPU=1 (docker build --build-arg GPU=1) puts onnxruntime-gpu in place of onnxruntime, for FaceNet on CUDA.
# The vgg16 model runs on Keras only: EXTRAS=milvus-client,convert brings TensorFlow back into this stage for it (a large
# image), and `python -m engine models fetch vgg16` downloads its weights.
ARG EXTRAS=milvus-client
ARG GPU=0

# The dependencies alone first (a cached layer until pyproject.toml changes). Not shipped: the third-party packages'
# own test suites (120 MB), and bytecode for modules nothing here imports (--no-compile; see below).
COPY pyproject.toml README.md ./
RUN python -c "import sys, tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
extras = [e for e in sys.argv[1].split(',') if e]; \
print('\n'.join(p['dependencies'] + [r for e in extras for r in p['optional-dependencies'][e]]))" "${EXTRAS}" \
        > /tmp/requirements.txt \
    && pip install --no-compile -r /tmp/requirements.txt \
    && if [ "${GPU}" = 1 ]; then pip uninstall --yes onnxruntime && pip install --no-compile "onnxruntime-gpu>=1.20,<2"; fi \
    && rm /tmp/requirements.txt \
    && for packages in $(python -c "import sysconfig as c; print(*{c.get_path('purelib'), c.get_path('platlib')})"); do \
        find "$packages" -mindepth 2 -type d \( -name tests -o -name test \) -prune -exec rm -rf {} +; done \
    && useradd --create-home --uid 10001 bot
# The package itself, installed (then its sources removed: one copy of the code, the installed one).
COPY engine ./engine
COPY bot ./bot
RUN pip install --no-deps --no-compile . && rm -rf build *.egg-info engine bot

COPY alembic.ini ./
COPY migrations ./migrations

# The verified graphs and their manifest (not the 92 MB Keras weights: the manifest names their sha256, which is
# what an index's fingerprint records), and the sample gallery in GALLERY_DIR, which a volume can replace.
COPY --from=convert /app/models/onnx.json /app/models/*.onnx /app/models/
COPY --from=convert --chown=10001:10001 /data/sample-gallery/ /gallery/

# A smoke test that also writes the bytecode of what runs (PYTHONDONTWRITEBYTECODE lifted for it, and the bot
# user cannot write there later): the bot's modules, and an index and a search of a sample photo on ONNX Runtime,
# in a scratch DATA_DIR. It fails the build if the image cannot search, or holds TensorFlow unless EXTRAS asked.
RUN mkdir -p /data && chown bot:bot /data \
    && case ",${EXTRAS}," in *,convert,*) ;; *) python -c "import importlib.util as u; \
assert u.find_spec('tensorflow') is None, 'TensorFlow is in the runtime image'" ;; esac \
    && env -u PYTHONDONTWRITEBYTECODE DATA_DIR=/tmp/smoke sh -c 'python -c "import bot.app" \
        && python -m engine index > /dev/null \
        && python -m engine search -k 1 "$(find /gallery/Madonna -name "*.jpg" | sort | head -n 1)" | grep -q "#1 Madonna"' \
    && rm -rf /tmp/smoke

USER bot
# Indexes, the SQLite database and reports; the gallery (one folder per person).
VOLUME ["/data", "/gallery"]

CMD ["python", "-m", "bot"]
