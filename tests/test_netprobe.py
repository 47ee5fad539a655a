"""Client context: TCP connect times to each provider endpoint, failures recorded as such."""

from __future__ import annotations

import asyncio

from bench.netprobe import host_port, measure, tcp_connect_times


def test_endpoints_resolve_to_host_and_port():
    assert host_port("https://api.e2b.app") == ("api.e2b.app", 443)
    assert host_port("http://127.0.0.1:8123/api") == ("127.0.0.1", 8123)
    assert host_port("api.sprites.dev") == ("api.sprites.dev", 443)


async def test_connect_times_to_a_listening_port_are_measured():
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        result = await tcp_connect_times(f"http://127.0.0.1:{port}", rounds=3)
    finally:
        server.close()
        await server.wait_closed()
    assert len(result["tcp_connect_s"]) == 3
    assert 0 < result["median_s"] < 1
    assert "errors" not in result


async def test_a_refused_connect_is_an_error_never_a_zero():
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    result = await tcp_connect_times(f"http://127.0.0.1:{port}", rounds=2)
    assert result["tcp_connect_s"] == [] and "median_s" not in result
    assert len(result["errors"]) == 2


async def test_providers_without_an_endpoint_are_left_out():
    assert await measure({"local": {"sdk_versions": {}}}) == {}
