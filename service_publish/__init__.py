"""REST publishing and administration (port 8001), plus the seed-compatible v1 API."""

from service_publish.app import create_app

__all__ = ["create_app"]
