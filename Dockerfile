# One image for every pipeline component and for the KServe predictor.
#
#   make image          # docker or podman, official python base
#   make image-ci       # buildah on a local debootstrap base (no registry, no daemon; see .ci/image/)
#
# Components: KFP runs `sh -c '... python3 -m kfp.dsl.executor_main ...'` with its own command, so there is no
# ENTRYPOINT here; CMD (the model server) is only the default when nothing else is given.

# Pinned tag of the official image; CI substitutes a locally built equivalent with the same layout
# (python3 and pip in /usr/local/bin), see .ci/image/build-base.sh.
ARG BASE_IMAGE=docker.io/library/python:3.11.14-slim-bookworm

# ---- builder: a virtual environment with the runtime dependencies, then the project ----
# checkov:skip=CKV_DOCKER_7: checkov does not expand ARG; BASE_IMAGE defaults to the pinned tag above and CI passes a locally built, content-keyed base.
FROM ${BASE_IMAGE} AS builder

# Only for builds behind a TLS-intercepting proxy (CI passes the CA bundle it mounts); unset by default.
ARG PIP_CERT
ARG PIP_INDEX_URL
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

RUN python3 -m venv /opt/venv
WORKDIR /src

# Dependencies first, from pyproject's runtime list (no dev extra) constrained by the lock: this layer is
# rebuilt only when those two files change, not on every source edit.
COPY pyproject.toml requirements.lock ./
RUN python3 -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' \
        > runtime-requirements.txt \
    && /opt/venv/bin/pip install --quiet -c requirements.lock -r runtime-requirements.txt

# Then the project itself (no dependency resolution: everything it needs is already there). pyproject names
# README.md as the long description; the glob (beside a file that always matches) tolerates its absence.
COPY pyproject.toml README.md* ./
COPY components ./components
RUN /opt/venv/bin/pip install --quiet --no-deps . \
    # Test suites shipped inside wheels (pandas, scipy, numpy, sklearn, pyarrow: ~100 MB) never run here.
    && find /opt/venv/lib -depth -type d -name tests -path '*/site-packages/*' -exec rm -rf {} + \
    # pip and setuptools are build tools; the final image installs nothing at run time.
    && /opt/venv/bin/pip uninstall --quiet --yes pip setuptools wheel \
    && /opt/venv/bin/python -c 'import kfp, kserve, sklearn, joblib, pandas, pyarrow, scipy, onnxruntime, skl2onnx, components.model_artifact'

# ---- final: the base plus the venv, as a fixed non-root user ----
FROM ${BASE_IMAGE}

ARG VERSION=0.1.0
ARG SOURCE_URL=unknown
ARG REVISION=unknown
LABEL org.opencontainers.image.title="kfp-sklearn-kserve" \
      org.opencontainers.image.description="KFP v2 components and KServe V1/V2 model server for scikit-learn" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="${SOURCE_URL}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0"

# A fixed UID so Kubernetes `runAsUser: 1000` / `runAsNonRoot` and file ownership agree with the image.
RUN groupadd --gid 1000 app \
    && useradd --uid 1000 --gid 1000 --create-home --home-dir /home/app --shell /usr/sbin/nologin app

COPY --from=builder /opt/venv /opt/venv

# The venv first on PATH: `python3` in KFP's command and the `kfp-sklearn-serve` script both resolve to it.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

USER 1000:1000
WORKDIR /home/app
EXPOSE 8080

# checkov:skip=CKV_DOCKER_2: no HEALTHCHECK on purpose: the same image runs batch pipeline steps, where a server health check would mark every healthy step "unhealthy"; Kubernetes ignores HEALTHCHECK, and the InferenceService's readiness probe checks the server.
CMD ["kfp-sklearn-serve", "--model_dir=/mnt/models", "--http_port=8080"]
