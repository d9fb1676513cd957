"""python -m service_subscribe: the subscribe service alone (default port 8002)."""

from __future__ import annotations

import os

from pgqueue.web.serve import run_service

if __name__ == "__main__":
    run_service(
        "service_subscribe.app:create_app",
        default_port=int(os.environ.get("PGQUEUE_PORT", 8002)),
    )
