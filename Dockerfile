# atf image: the research package and its CLI on the pinned stack.
# The serving image (FastAPI + onnxruntime, no torch) replaces this in the deployment milestone.
#   docker build -t atf .                      (behind a TLS-intercepting proxy add:
#   -v /etc/ssl/certs/ca-certificates.crt:/run/host-ca/ca.crt:ro --build-arg PIP_CERT=/run/host-ca/ca.crt)
#   docker run --rm atf datasets
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}
ARG PIP_CERT=
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /opt/atf
COPY settings.ini setup.py README.md ./
COPY requirements/ requirements/
COPY atf/ atf/
RUN python3 -m venv /opt/venv \
 && PIP_CERT="${PIP_CERT}" /opt/venv/bin/pip install --no-cache-dir -c requirements/constraints.txt . \
 && PIP_CERT="${PIP_CERT}" /opt/venv/bin/pip install --no-cache-dir --no-deps -r requirements/data.txt \
 && useradd --create-home --uid 10001 atf
COPY configs/ configs/
USER atf
ENV PATH=/opt/venv/bin:$PATH MPLCONFIGDIR=/tmp/mpl
ENTRYPOINT ["atf"]
CMD ["--help"]
