"""A small client of the certctl-notify HTTP API, for the CLI's operator commands."""

from __future__ import annotations

import httpx

from certctl_notify.errors import ApiClientError


class ApiClient:
    def __init__(self, url: str, key: str | None, *, timeout: float = 10.0):
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        # Every request is a path under base_url and redirects are not followed, so a plain-http API is
        # never reached over TLS: loading the CA bundle for it would only cost ~50 ms of each command's
        # start-up. An https API is verified as always.
        verify = url.lower().startswith("https://")
        self._http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout, trust_env=False,
                                  verify=verify, follow_redirects=False)

    def request(self, method: str, path: str, **kwargs) -> dict:
        """One call; returns the JSON body of a 2xx answer.

        Raises:
            ApiClientError: with the API's own message for a 4xx/5xx, or the connection problem.
        """
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ApiClientError(f"cannot reach the API at {self._http.base_url}: {exc}") from None
        try:
            body = response.json()
        except ValueError:
            body = {}
        if response.is_error:
            message = body.get("message") or f"HTTP {response.status_code}"
            raise ApiClientError(message, status=response.status_code, code=body.get("error"))
        return body

    def get(self, path: str, **params) -> dict:
        return self.request("GET", path, params={k: v for k, v in params.items() if v is not None})

    def post(self, path: str, body: dict | None = None) -> dict:
        return self.request("POST", path, json=body)
