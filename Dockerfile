# syntax=docker/dockerfile:1
# Tidal in one image: the model server (`tidal model-server`), the control plane and its gateway (`tidal up`), and
# `tidal gateway` on its own. Build from the repository's root:
#   docker build -t tidal:0.1.0 .                                         # ONNX models, Kubernetes client
#   docker build --build-arg EXTRAS=kubernetes,s3,tensorflow -t tidal:0.1.0-tf .   # plus S3 and SavedModels
# The Deployments that `tidal export kubernetes` and deploy/helm/tidal write run it as user 10001.

FROM python:3.11-slim-bookworm AS build
ARG EXTRAS=kubernetes
WORKDIR /src
COPY pyproject.toml README.md ./
COPY tidal ./tidal
# Wheels for Tidal and every dependency, so the final stage installs offline and keeps no build tools.
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".[${EXTRAS}]"

FROM python:3.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TIDAL_HOME=/var/lib/tidal
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index /wheels/*.whl \
    && useradd --uid 10001 --user-group --no-create-home --home-dir /var/lib/tidal --shell /usr/sbin/nologin tidal \
    && install -d -o 10001 -g 10001 -m 0700 /var/lib/tidal
USER 10001:10001
WORKDIR /var/lib/tidal
# 8500 gRPC and 8501 REST of a model server (TF Serving's ports), 8501 of the gateway too, 8470 the control plane's API.
EXPOSE 8500 8501 8470
ENTRYPOINT ["tidal"]
CMD ["--help"]
