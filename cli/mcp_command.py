"""``certctl-notify mcp``: the MCP server for AI assistants (the SDK is imported only when it runs)."""

from __future__ import annotations

import ipaddress

import click

from cli.common import api_client, api_options


def _address(value: str | None) -> tuple[str, int] | None:
    if value is None:
        return None
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise click.BadParameter(f"{value!r} is not HOST:PORT (e.g. 127.0.0.1:8765)", param_hint="--http")
    return host.strip("[]"), int(port)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@click.command("mcp")
@api_options
@click.option("--http", "http", metavar="HOST:PORT",
              help="Serve MCP over streamable HTTP at http://HOST:PORT/mcp instead of stdio.")
@click.option("--allow-remote", is_flag=True,
              help="With --http: allow a non-loopback address. Anyone who reaches it acts with this key.")
def mcp(url: str, key: str | None, http: str | None, allow_remote: bool) -> None:
    """Serve the dead-letter queue to AI assistants over MCP (stdio unless --http).

    The tools call the API with --key / CERTCTL_API_KEY, so its scope applies: a read key lists and
    reads; requeue, bulk requeue and mark read need an admin key.
    """
    address = _address(http)
    if address and not _loopback(address[0]) and not allow_remote:
        raise click.UsageError(f"--http {http} is reachable from other hosts, and the MCP endpoint has no sign-in "
                               "of its own: anyone who reaches it acts with this API key. Bind 127.0.0.1 (and put "
                               "an authenticating proxy in front), or pass --allow-remote.")
    if not key:
        click.echo("warning: no API key (CERTCTL_API_KEY): every tool will be refused by the API", err=True)
    from cli.mcp_server import build_server

    server = build_server(api_client(url, key))
    if address is None:
        server.run("stdio")
        return
    host, port = address
    click.echo(f"MCP over streamable HTTP at http://{http}/mcp (API {url})", err=True)
    server.run("streamable-http", host=host, port=port)
