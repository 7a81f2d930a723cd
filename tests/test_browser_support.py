"""The browser-test tooling (tests/support/browser.py) on tiny pages served from 127.0.0.1 with the strict
Content-Security-Policy the console sends: axe runs under it, Tab reaches every control, screenshots are
written, JS dialogs are recorded, and a missing tool fails instead of skipping."""

from __future__ import annotations

import struct
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from playwright.sync_api import Error as PlaywrightError

from tests.support import browser as support
from tests.support.browser import axe_violations, dialogs, enabled_controls, save_screenshot, tab_order

CSP = "default-src 'self'; script-src 'self'"

_HEAD = '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{title}</title></head>'
PAGES = {
    "/": (_HEAD.format(title="Smoke") + "<body><main><h1>Certificates</h1><p>Two buttons and an image.</p>"
          '<img src="/pixel.svg" width="40" height="40">'
          '<button id="save" type="button">Save</button> <button id="cancel" type="button">Cancel</button>'
          "</main></body></html>", "text/html; charset=utf-8"),
    "/pixel.svg": ('<svg xmlns="http://www.w3.org/2000/svg" width="40" height="40">'
                   '<rect width="40" height="40" fill="#c33"/></svg>', "image/svg+xml"),
    # Its own script ('self'): allowed by the CSP, so the alert opens.
    "/alert": (_HEAD.format(title="Alert") + '<body><main><h1>Alert</h1><script src="/alert.js"></script>'
               "</main></body></html>", "text/html; charset=utf-8"),
    "/alert.js": ("alert('hello from alert.js');", "text/javascript"),
    # A datetime-local input takes one Tab per field (month, day, year, hour, minute, AM/PM) in chromium.
    "/date": (_HEAD.format(title="Date") + '<body><main><h1>Filter</h1><label>From <input type="datetime-local" '
              'id="from"></label><button id="apply" type="button">Apply</button></main></body></html>',
              "text/html; charset=utf-8"),
    # An injected inline script, as an XSS would be: the CSP blocks it, so no dialog opens.
    "/inline": (_HEAD.format(title="Inline") + "<body><main><h1>Inline</h1><script>alert('xss')</script>"
                "</main></body></html>", "text/html; charset=utf-8"),
}


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        body, content_type = PAGES.get(self.path, ("not found", "text/plain"))
        data = body.encode()
        self.send_response(200 if self.path in PAGES else 404)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def site():
    """Base URL of PAGES, served by a thread on 127.0.0.1 with the strict CSP on every response."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_axe_runs_under_the_pages_csp(page, site):
    response = page.goto(site + "/")
    assert response.headers["content-security-policy"] == CSP
    violations = axe_violations(page)
    assert [(v["id"], v["impact"]) for v in violations] == [("image-alt", "critical")], violations
    assert violations[0]["targets"] == ["img"]
    assert violations[0]["help"]
    # The CSP is in force in this context (no bypass_csp): add_script_tag's inline script is refused,
    # which is why axe_violations evaluates axe's source instead.
    with pytest.raises(PlaywrightError, match="Content Security Policy"):
        page.add_script_tag(content="window.injected = true")


def test_tab_order_reaches_both_buttons(page, site):
    page.goto(site + "/")
    expected = ['button#save "Save"', 'button#cancel "Cancel"']
    assert tab_order(page) == expected
    page.focus("#cancel")  # a walk started mid-page still reports the order from the top
    assert tab_order(page) == expected


def test_tab_order_counts_a_control_with_several_fields_once(page, site):
    page.goto(site + "/date")
    assert tab_order(page) == ['input#from "From"', 'button#apply "Apply"']
    assert enabled_controls(page) == tab_order(page)


def test_screenshot_is_a_full_page_png(page, site):
    page.goto(site + "/")
    path = save_screenshot(page, "browser-support smoke")
    assert path == support.ROOT / "artifacts" / "screenshots" / "browser-support_smoke.png"
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])  # IHDR
    assert (width, height) == (1280, 800)
    assert len(data) > 5_000, f"{len(data)} bytes: a blank page?"


def test_dialogs_are_recorded_and_csp_blocks_inline_scripts(page, site):
    opened = dialogs(page)
    page.goto(site + "/alert")
    assert opened == [{"type": "alert", "message": "hello from alert.js"}]
    page.goto(site + "/inline")
    assert page.locator("h1").inner_text() == "Inline"
    assert opened == [{"type": "alert", "message": "hello from alert.js"}]
    assert dialogs(page) is opened


def test_missing_tools_fail_naming_the_install_script(monkeypatch):
    monkeypatch.setenv("CERTCTL_CHROMIUM", "/nonexistent/chromium")
    with pytest.raises(pytest.fail.Exception, match=r"bash scripts/install-test-tools"):
        support.require_tools()
