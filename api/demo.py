"""The `certctl-notify dev --demo` receiver and alerts: sent, retried and dead rows within a minute."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

#: Compressed schedule for the demo only: waits of 2, 4, 8, 10 s, so a dead row appears in ~25 s.
DEMO_ENVIRONMENT = {
    "CERTCTL_NOTIFICATION_RETRY_BASE": "2s",
    "CERTCTL_NOTIFICATION_RETRY_CAP": "10s",
    "CERTCTL_NOTIFICATION_RETRY_INTERVAL": "10s",
    "CERTCTL_OUTBOUND_ALLOW": "127.0.0.1/32",
    "CERTCTL_WEBHOOK_SECRET": "whsec_ZGVtby1zZWNyZXQtbm90LWZvci1wcm9kdWN0aW9u",
}

#: (certificate id, what the demo receiver does with it, alert type, message)
DEMO_ALERTS = [
    ("demo-api", "answers 200", "ExpirationWarning", "api.example.com expires in 14 days"),
    ("demo-flaky", "answers 503 twice, then 200", "RenewalFailure", "renewal of shop.example.com failed"),
    ("demo-down", "always answers 503", "DeploymentFailure", "deployment to lb-7 failed"),
    ("demo-gone", "answers 410 Gone", "Revocation", "old.example.com was revoked"),
]


class DemoReceiver:
    """A webhook receiver on 127.0.0.1 that behaves per certificate id as `DEMO_ALERTS` says."""

    def __init__(self):
        self.hits: dict[str, int] = {}
        lock = threading.Lock()
        hits = self.hits

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                try:
                    key = json.loads(body)["data"]["certificate_id"]
                except (ValueError, KeyError, TypeError):
                    key = None
                with lock:
                    hits[key] = hits.get(key, 0) + 1
                    count = hits[key]
                flaky = key == "demo-flaky" and count <= 2
                status = {"demo-down": 503, "demo-gone": 410}.get(key, 503 if flaky else 200)
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/demo-hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
