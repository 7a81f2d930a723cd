"""Driving the operator console in a browser: signing in through its form, reading its notification rows,
and reading the tabs' counts."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from playwright.sync_api import Page


def sign_in(page: Page, base_url: str, key: str, path: str = "/console/") -> None:
    """Open ``path``, which sends a stranger to the sign-in form, and sign in there with ``key``."""
    page.goto(base_url + path)
    assert "/console/sign-in" in page.url, page.url
    page.fill("#key", key)
    with page.expect_navigation():
        page.get_by_role("button", name="Sign in").click()
    assert "/console/sign-in" not in page.url, f"sign-in with {key!r} refused: {page.url}"


#: Every notification row in the live region as the operator sees it, read in one go (no waiting).
_ROWS = """() => Array.from(document.querySelectorAll('#live tr[data-id]'), (tr) => ({
    id: tr.dataset.id,
    status: tr.dataset.status,
    badge: tr.querySelector('.badge').textContent.trim(),
    channel: tr.children[2].textContent.trim(),
    attempt: tr.querySelector('td.attempt').textContent.trim(),
    outside: tr.classList.contains('outside'),
}))"""


def rows(page: Page) -> list[dict]:
    """The rows shown now: dicts of id, status, badge, channel, attempt and outside (kept after leaving the tab)."""
    return page.evaluate(_ROWS)


def tab_count(page: Page, tab: str) -> int:
    """The count a tab of the notifications view shows (``1,234`` → 1234)."""
    return int(page.locator(f'nav.tabs a[data-tab="{tab}"] .count').inner_text().replace(",", ""))
