# atf inference service: an exported model (atf export) served by FastAPI + onnxruntime.
# Slim on purpose: no torch, no Jupyter, no research stack; a non-root user; a HEALTHCHECK on /health.
#
#   atf export reports/<run-id>                       # writes reports/<run-id>/models/<key>/
#   docker build --build-arg MODEL_DIR=reports/<run-id>/models/<key> -t atf-serve .
#   docker run -d -p 127.0.0.1:8000:8000 -e ATF_API_KEY=... atf-serve
# The service refuses to start without a key (an empty one included); `... atf-serve --no-auth` serves without one,
# with a warning, and never on /admin/*. Timeouts and connection limits are `atf serve` options (--header-timeout,
# --body-timeout, --max-connections, --max-in-flight, ...); in production put a reverse proxy in front.
# or mount a model instead of copying one in:  docker run -v $PWD/reports/<run-id>/models/<key>:/model:ro ...
# Behind a TLS-intercepting proxy, mount its CA for the build only (it never lands in the image):
#   -v /etc/ssl/certs/ca-certificates.crt:/run/host-ca/ca.crt:ro --build-arg PIP_CERT=/run/host-ca/ca.crt
# scripts/container-smoke.sh builds and runs this image with podman (make test runs it).
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
ARG PIP_CERT=
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
# two layers: the pinned serving dependencies (settings.ini's serve_requirements at constraints.txt's versions) change
# rarely and stay cached; the package itself (atf/) changes often and is installed on top without dependencies
COPY settings.ini ./
COPY requirements/ requirements/
RUN python3 -m venv /opt/venv \
 && export PIP_CERT="${PIP_CERT}" \
 && /opt/venv/bin/pip install -q -c requirements/constraints.txt $(sed -n 's/^serve_requirements *= *//p' settings.ini)
COPY setup.py pyproject.toml README.md ./
COPY atf/ atf/
RUN /opt/venv/bin/pip install -q --no-deps . \
 && /opt/venv/bin/python -c "import atf.serving.app, atf.serving.cli, sys; assert 'torch' not in sys.modules" \
 && /opt/venv/bin/python -m pip uninstall -q -y pip setuptools

FROM ${BASE_IMAGE}
ARG MODEL_DIR=deploy/model
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PATH=/opt/venv/bin:$PATH
COPY --from=build /opt/venv /opt/venv
RUN useradd --no-create-home --uid 10001 --shell /usr/sbin/nologin atf
COPY --chown=root:root ${MODEL_DIR} /model
USER 10001
# HOST and PORT may be overridden at run time (-e PORT=...); extra arguments go to `atf serve` (e.g. --fallback)
ENV HOST=0.0.0.0 PORT=8000
EXPOSE 8000
# the check calls /health where the server listens: $HOST ($PORT), a wildcard address read as loopback, no proxy
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python3", "-c", "import atf.serving.cli as c; raise SystemExit(c.healthcheck())"]
ENTRYPOINT ["sh", "-c", "exec atf serve /model --host \"$HOST\" --port \"$PORT\" \"$@\"", "atf-serve"]
