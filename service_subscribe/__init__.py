"""WebSocket delivery and HTTP pull (port 8002), with live offset reset."""

from service_subscribe.app import create_app

__all__ = ["create_app"]
