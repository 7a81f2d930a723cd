"""The CLI's and the MCP server's client of the API: an https API is verified, a plain-http one is not
made to load a CA bundle it can never use."""

from __future__ import annotations

import ssl

import pytest
import trustme

from certctl_notify.errors import ApiClientError
from cli.api_client import ApiClient
from tests.support.receiver import Receiver


@pytest.fixture
def https_receiver():
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    receiver = Receiver(tls=context).start()
    yield receiver
    receiver.stop()


def test_an_https_api_with_a_certificate_nobody_trusts_is_refused(https_receiver):
    with pytest.raises(ApiClientError, match="CERTIFICATE_VERIFY_FAILED"):
        ApiClient(https_receiver.url.removesuffix("/hook"), "admin-key").post("/hook", {})
    assert https_receiver.requests == []


def test_a_plain_http_api_is_reached(receiver):
    assert ApiClient(receiver.url.removesuffix("/hook"), "admin-key").post("/hook", {}) == {}
    assert receiver.requests[0].headers["Authorization"] == "Bearer admin-key"
