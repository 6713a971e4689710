# shiftproxy: the proxy and the local sample apps in one slim image.
#   proxy:  docker run -p 8080:8080 -p 31400:31400 -v $PWD/config/compose:/etc/shiftproxy:ro \
#             -v shiftproxy-state:/var/lib/shiftproxy shiftproxy
#   an app: docker run --no-healthcheck --entrypoint python shiftproxy -m proxy.samples reviews --host 0.0.0.0 --version v3
# Config is read-only to the proxy (uid 10001); objects applied at run time go to $SHIFTPROXY_STATE_DIR.
# The health check asks the proxy's admin API, so an app container started from this image disables it.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    SHIFTPROXY_STATE_DIR=/var/lib/shiftproxy

WORKDIR /app
COPY pyproject.toml README.md ./
COPY proxy ./proxy
# iptables: for `shiftproxy iptables`, the capture rules of a sidecar pod's init container
RUN apt-get update \
    && apt-get install -y --no-install-recommends iptables \
    && rm -rf /var/lib/apt/lists/* \
    && pip install --no-cache-dir . \
    && useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin shiftproxy \
    && mkdir -p /var/lib/shiftproxy \
    && chown shiftproxy /var/lib/shiftproxy
# root-owned: the proxy reads its config and writes applied objects only to the state directory, which a
# named volume mounted there inherits (owner 10001) on first use
COPY config/compose /etc/shiftproxy

USER 10001
# 8080 HTTP gateway, 31400 TCP gateway, 15000 admin, 15001 sidecar outbound HTTP
EXPOSE 8080 31400 15000 15001
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:15000/ready', timeout=2).status != 200)"]
# SIGTERM: stop accepting, finish in-flight requests (--drain-timeout), exit 0
STOPSIGNAL SIGTERM
ENTRYPOINT ["shiftproxy"]
CMD ["run", "--config", "/etc/shiftproxy/bookinfo", "--config", "/etc/shiftproxy/tcp-echo"]
