# Thrifty NAS: one image for the API and the GPU workers (see docker-compose.yml).
#
#   docker build -t thrifty-nas .                       # torch from PyPI: the CUDA build
#   docker build -t thrifty-nas:cpu --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    THRIFTY_HOME=/var/lib/thrifty

# torch first, in its own layer: it is by far the largest download and changes least often.
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=""
RUN if [ -n "$TORCH_INDEX_URL" ]; then \
        pip install "torch==${TORCH_VERSION}" --index-url "$TORCH_INDEX_URL"; \
    else \
        pip install "torch==${TORCH_VERSION}"; \
    fi

WORKDIR /app

# The project's dependencies next (cached until pyproject.toml changes), then its code.
COPY pyproject.toml README.md ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

COPY alembic.ini ./
COPY nas_core ./nas_core
COPY store ./store
COPY worker ./worker
COPY api ./api
COPY cli ./cli
COPY client ./client
# Not editable: the migrations travel inside the store package (package data).
RUN pip install --no-deps . \
    && useradd --create-home --uid 10001 thrifty \
    && mkdir -p "$THRIFTY_HOME" /artifacts /uploads /datasets \
    && chown thrifty:thrifty "$THRIFTY_HOME" /artifacts /uploads

USER thrifty
EXPOSE 8000

# The API by default; the worker service runs `thrifty-nas worker --gpus all`.
CMD ["uvicorn", "api.main:app", "--host", "0.0.0.0", "--port", "8000", "--proxy-headers"]
