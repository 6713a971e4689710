"""Local stand-ins for Istio's Bookinfo (productpage, details, reviews v1/v2/v3, ratings) and tcp-echo.

They reproduce what traffic shifting can observe (exact JSON bodies, HTML star markers, tcp-echo's
per-line prefix, productpage's outbound calls by service name through an HTTP proxy) and start in a
fraction of a second. Run one per process with `python -m proxy.samples <app>`, or in-process:

    server = await start_reviews("v3", "127.0.0.1", 0, ratings="ratings:9080", proxy=("127.0.0.1", 15001))
    port = server.port
    server.close(); await server.wait_closed()
"""

from __future__ import annotations

from proxy.samples.details import start_details
from proxy.samples.productpage import start_productpage
from proxy.samples.ratings import start_ratings
from proxy.samples.reviews import start_reviews
from proxy.samples.server import SampleServer
from proxy.samples.tcp_echo import start_tcp_echo

__all__ = [
    "SampleServer",
    "start_details",
    "start_productpage",
    "start_ratings",
    "start_reviews",
    "start_tcp_echo",
]
