"""Browser tests: Debian's chromium driven by Playwright's sync API, axe-core for accessibility checks,
screenshots, keyboard reachability and JS dialogs.

Both tools come from ``bash scripts/install-test-tools`` (chromium from apt, axe-core from npm into the
git-ignored ``var/node/``); Playwright's own browser download is not used. A missing tool fails the run
(``require_tools``), it never skips the browser tests.

Pages under test send ``Content-Security-Policy: script-src 'self'``, which blocks the inline ``<script>``
that ``page.add_script_tag(path=...)`` inserts. ``axe_violations`` therefore runs axe's source with
``page.evaluate`` (DevTools-protocol evaluation is not subject to the page's CSP), so every context keeps
the page's real CSP: no ``bypass_csp`` anywhere, and XSS tests see what a browser enforces.
"""

from __future__ import annotations

import os
import re
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Dialog, Page, Playwright

ROOT = Path(__file__).resolve().parents[2]
#: The browser Playwright drives; ``CERTCTL_CHROMIUM`` overrides it.
DEFAULT_CHROMIUM = "/usr/bin/chromium"
AXE_JS = ROOT / "var" / "node" / "node_modules" / "axe-core" / "axe.min.js"
SCREENSHOTS = ROOT / "artifacts" / "screenshots"
VIEWPORT = {"width": 1280, "height": 800}
DEFAULT_TIMEOUT_MS = 10_000
INSTALL_HINT = "run `bash scripts/install-test-tools` (CI does, see .ci/run)"


def chromium_path() -> str:
    """The chromium executable: ``$CERTCTL_CHROMIUM`` or /usr/bin/chromium."""
    return os.environ.get("CERTCTL_CHROMIUM") or DEFAULT_CHROMIUM


def require_tools() -> None:
    """Fail the test (never skip) when chromium or axe-core is not installed."""
    missing = []
    if not os.access(chromium_path(), os.X_OK):
        missing.append(f"chromium ({chromium_path()})")
    if not AXE_JS.is_file():
        missing.append(f"axe-core ({AXE_JS.relative_to(ROOT)})")
    if missing:
        pytest.fail(f"browser tests need {' and '.join(missing)}: {INSTALL_HINT}", pytrace=False)


def launch(playwright: Playwright) -> Browser:
    """A headless chromium Browser from ``chromium_path()`` (``--no-sandbox``: the tests run as root)."""
    # --disable-dev-shm-usage: containers often have a tiny /dev/shm, and Debian's /usr/bin/chromium
    # wrapper, which should add it then, fails its own check when findmnt prints two lines.
    return playwright.chromium.launch(executable_path=chromium_path(), headless=True,
                                      args=["--no-sandbox", "--disable-dev-shm-usage"])


@contextmanager
def browser_session() -> Iterator[Browser]:
    """Sync Playwright and a launched chromium for the ``with`` block; both closed at its end."""
    require_tools()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = launch(playwright)
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def new_page(browser: Browser) -> Iterator[Page]:
    """A page in a fresh context (1280x800, 10 s default timeout); the context is closed at the end."""
    context = browser.new_context(viewport=VIEWPORT)
    try:
        page = context.new_page()
        page.set_default_timeout(DEFAULT_TIMEOUT_MS)
        yield page
    finally:
        context.close()


@cache
def _axe_source() -> str:
    # "\n;void 0": evaluated as a script whose value is undefined (not a function Playwright would call).
    return AXE_JS.read_text(encoding="utf-8") + "\n;void 0"


def axe_violations(page: Page, *, impacts: tuple[str, ...] = ("serious", "critical")) -> list[dict]:
    """axe-core's violations of ``impacts`` on the page's main frame: dicts of id, impact, help, targets."""
    if not page.evaluate("() => typeof window.axe === 'object' && typeof window.axe.run === 'function'"):
        page.evaluate(_axe_source())  # not add_script_tag: the page's CSP blocks inline scripts
    violations = page.evaluate("""async () => {
        const results = await window.axe.run(document, {resultTypes: ['violations']});
        return results.violations.map((v) => ({
            id: v.id, impact: v.impact, help: v.help,
            targets: v.nodes.map((n) => n.target.map((t) => Array.isArray(t) ? t.join(' >>> ') : t).join(' | ')),
        }));
    }""")
    return [v for v in violations if v["impact"] in impacts]


def save_screenshot(page: Page, name: str) -> Path:
    """A full-page PNG at artifacts/screenshots/<name>.png (repo root); returns its path."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "screenshot"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{safe}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


#: One Tab press: describes the focused element (into shadow roots and same-origin iframes) and tells
#: whether focus is outside the page (the browser's UI, between the last control and the first) or on
#: an element it has already been on this walk.
#: How a control is named: ``tag#id "label"`` by its accessible-name sources, in order.
_DESCRIBE = """(el) => {
    const clean = (s) => (s || '').replace(/\\s+/g, ' ').trim().slice(0, 80);
    const labelledBy = (el.getAttribute('aria-labelledby') || '').split(/\\s+/)
        .map((id) => id && el.ownerDocument.getElementById(id)).filter(Boolean).map((e) => e.textContent).join(' ');
    const label = clean(el.getAttribute('aria-label')) || clean(labelledBy)
        || clean(el.labels && el.labels[0] && el.labels[0].innerText) || clean(el.innerText)
        || clean(el.getAttribute('title')) || clean(el.getAttribute('placeholder')) || clean(el.value);
    const tag = el.tagName.toLowerCase() + (el.id ? '#' + el.id : '');
    return label ? `${tag} "${label}"` : tag;
}"""

_TAB_STEP = f"""() => {{
    let el = document.activeElement;
    for (;;) {{
        if (el && el.shadowRoot && el.shadowRoot.activeElement) {{ el = el.shadowRoot.activeElement; continue; }}
        let inner = null;
        try {{ inner = el && el.contentDocument && el.contentDocument.activeElement; }} catch (e) {{ inner = null; }}
        if (inner && inner !== inner.ownerDocument.body) {{ el = inner; continue; }}
        break;
    }}
    const outside = !el || el === document.body || el === document.documentElement;
    const key = outside ? 'outside' : el;
    // a control that keeps focus for several presses (a datetime-local input: one per field) counts once
    const same = !outside && window.__certctlTabLast === el;
    window.__certctlTabLast = key;
    const seen = !same && window.__certctlTabWalk.has(key);
    window.__certctlTabWalk.add(key);
    if (outside) return {{seen, same, outside, description: null}};
    return {{seen, same, outside, description: ({_DESCRIBE})(el)}};
}}"""

#: The page's enabled, rendered controls in document order (no positive tabindex assumed); only those
#: of the modal dialog when one is open (the rest of the page is inert then).
_CONTROLS = f"""() => {{
    const root = document.querySelector('dialog[open]:modal') || document;
    const candidates = root.querySelectorAll('a[href], button, input, select, textarea, summary, [tabindex]');
    return Array.from(candidates).filter((el) => el.tabIndex >= 0 && !el.disabled && el.type !== 'hidden'
            && !el.closest('[inert], dialog:not([open])') && el.getClientRects().length > 0
            && getComputedStyle(el).visibility !== 'hidden').map({_DESCRIBE});
}}"""


def enabled_controls(page: Page) -> list[str]:
    """Links, buttons and fields a keyboard user should reach, in document order, named as `tab_order` names them."""
    return page.evaluate(_CONTROLS)



def tab_order(page: Page, limit: int = 200) -> list[str]:
    """Tab through the page from the top; returns ``tag#id "label"`` of each control focused, in order."""
    # blur() keeps the focus navigation starting point, so the walk may begin mid-page; it goes once
    # round the cycle (controls..., the browser's UI, controls...) and is then rotated to start after
    # the browser's UI, as a fresh page's first Tab does (positive tabindex included).
    page.evaluate("() => { window.__certctlTabWalk = new Set(); document.activeElement?.blur(); }")
    steps: list[str | None] = []
    try:
        for _ in range(limit):
            page.keyboard.press("Tab")
            step = page.evaluate(_TAB_STEP)
            if step["same"]:
                continue
            if step["seen"]:
                break
            steps.append(step["description"])
    finally:
        page.evaluate("() => { delete window.__certctlTabWalk; delete window.__certctlTabLast; }")
    if None in steps:
        i = steps.index(None)
        steps = steps[i + 1:] + steps[:i]
    return steps


_dialogs: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def dialogs(page: Page) -> list[dict]:
    """Records JS dialogs the page opens from now on (type, message; dismissed); the live list."""
    if page in _dialogs:
        return _dialogs[page]
    opened: list[dict] = []

    def record(dialog: Dialog) -> None:
        opened.append({"type": dialog.type, "message": dialog.message})
        if dialog.type == "beforeunload":
            dialog.accept()  # let the page close or navigate
        else:
            dialog.dismiss()

    page.on("dialog", record)
    _dialogs[page] = opened
    return opened
