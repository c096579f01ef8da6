# berth's worker image: berth installed on top of a vLLM image, with `berth serve` as what runs.
#
# Build (the base is any image with vLLM and python3 with pip; the default is vLLM's official one):
#   docker build -t berth:local .
#   docker build --build-arg BASE_IMAGE=rocm/vllm:latest -t berth:rocm .
# berth's own dependencies come from PyPI. Offline, on a base that already holds them and
# setuptools (as CI does, see scripts/build_image_test.sh), tell pip not to look anywhere:
#   docker build --network none --build-arg BASE_IMAGE=my/base:tag \
#       --build-arg PIP_INSTALL_ARGS="--no-index --no-build-isolation" -t berth:local .
#
# Run (plans use the host network; the worker keeps its registry in /var/lib/berth):
#   docker run -d --gpus all --network host --ipc host -v /var/lib/berth:/var/lib/berth berth:local
# The API listens on 127.0.0.1:8001 unless told otherwise: -e BERTH_HOST=0.0.0.0 makes it reach-
# able from other machines (then set BERTH_API_TOKEN or BERTH_API_TOKEN_FILE as well). Every
# setting is a BERTH_* variable; see docs/configuration.md. Other commands run the same way:
#   docker run --rm berth:local version
#   docker run --rm berth:local plan /opt/berth/examples/single-gpu.yaml
ARG BASE_IMAGE=vllm/vllm-openai:v0.32.0
FROM ${BASE_IMAGE}

# Extra pip options, e.g. "--no-index --no-build-isolation" for offline builds.
ARG PIP_INSTALL_ARGS=""

LABEL org.opencontainers.image.title="berth" \
      org.opencontainers.image.description="Node-level worker that plans, runs and serves vLLM instances" \
      org.opencontainers.image.licenses="Apache-2.0"

COPY pyproject.toml README.md /opt/berth/src/
COPY berth /opt/berth/src/berth
COPY examples /opt/berth/examples

# PIP_BREAK_SYSTEM_PACKAGES: the image is the environment; Debian-style bases would refuse.
RUN PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --no-cache-dir ${PIP_INSTALL_ARGS} /opt/berth/src \
    && rm -rf /opt/berth/src \
    && berth version

ENV BERTH_DATA_DIR=/var/lib/berth
EXPOSE 8001
ENTRYPOINT ["berth"]
CMD ["serve"]
