"""The metrics listener: this homeserver's Prometheus registry as text at GET /metrics.

A listener of its own, not a route on the client port: metrics carry no
authentication, so they belong on an address only the operator reaches.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from twisted.web.resource import Resource
from twisted.web.server import Request, Site


class MetricsResource(Resource):
    """Renders the registry on each GET; collecting is cheap, so it runs on the reactor."""

    isLeaf = True

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__()
        self._registry = registry

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"Content-Type", CONTENT_TYPE_LATEST.encode("ascii"))
        return generate_latest(self._registry)


def metrics_site(registry: CollectorRegistry) -> Site:
    root = Resource()
    root.putChild(b"metrics", MetricsResource(registry))
    return Site(root)
