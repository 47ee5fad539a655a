"""Where the client sits, in numbers: TCP connect time to each provider's API endpoint.

Latency measured from one place cannot be read next to latency measured from another unless
the distance is known, so every run times ``ROUNDS`` plain TCP connects (no TLS, no HTTP) to
the host and port of each provider's configured endpoint before it starts, and the manifest
keeps every value. A failed connect is recorded with its error, never as zero.
"""

from __future__ import annotations

import asyncio
import ipaddress
import statistics
import time
from typing import Any
from urllib.parse import urlsplit

ROUNDS = 5
CONNECT_TIMEOUT_S = 5.0


def host_port(url: str) -> tuple[str, int] | None:
    parts = urlsplit(url if "://" in url else f"https://{url}")
    if not parts.hostname:
        return None
    port = parts.port or (443 if parts.scheme in ("https", "wss") else 80)
    return parts.hostname, port


def is_loopback(url: str) -> bool:
    """Whether ``url`` points at this machine (an emulator, not the provider's cloud)."""
    target = host_port(url)
    if target is None:
        return False
    host = target[0]
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def tcp_connect_times(url: str, *, rounds: int = ROUNDS) -> dict[str, Any]:
    target = host_port(url)
    if target is None:
        return {"endpoint": url, "error": "no host in the endpoint"}
    host, port = target
    times: list[float] = []
    errors: list[str] = []
    for _ in range(rounds):
        t0 = time.perf_counter_ns()
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                _, writer = await asyncio.open_connection(host, port)
        except (OSError, TimeoutError) as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
            continue
        times.append((time.perf_counter_ns() - t0) / 1e9)
        writer.close()
    result: dict[str, Any] = {"endpoint": f"{host}:{port}", "tcp_connect_s": times}
    if times:
        result["median_s"] = statistics.median(times)
    if errors:
        result["errors"] = errors
    return result


async def measure(environments: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Connect times for every provider whose environment names an ``endpoint``."""
    found = {}
    for provider, environment in environments.items():
        endpoint = environment.get("endpoint")
        if endpoint:
            found[provider] = await tcp_connect_times(str(endpoint))
    return found
