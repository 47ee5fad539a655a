"""The SDK adapter base (providers/sdk.py) and the stub provider, without an SDK or root."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from providers import REGISTRY, provider_class
from providers.base import RUN_LABEL, Capabilities, Sandbox, SandboxSpec
from providers.errors import (
    AuthError,
    NotFound,
    OperationTimeout,
    ProtocolError,
    ProviderError,
    QuotaOrRateLimited,
    Unavailable,
)
from providers.sdk import (
    HTTP_STATUS,
    ConnectionMode,
    Handle,
    SDKProvider,
    SDKSettings,
    observe_response,
    on,
    sdk_timeout,
)
from providers.settings import SettingError, setting


class SdkBusy(Exception):
    """Stands for an SDK's own exception class."""


class WithStatus(Exception):
    def __init__(self, status: int, retry_after: str | None = None) -> None:
        super().__init__(f"answered {status}")
        self.status_code = status
        self.headers = {"Retry-After": retry_after} if retry_after else {}


@dataclass(frozen=True, kw_only=True)
class FakeSettings(SDKSettings):
    region: str | None = setting(None, help="region")
    sdk_timeout_s: float = sdk_timeout(30.0, "the SDK's timeout")


class FakeClient:
    closed = 0

    async def close(self) -> None:
        FakeClient.closed += 1


class FakeProvider(SDKProvider[FakeClient]):
    """A provider whose "SDK" is this test: every operation is a call we script."""

    id = "fake"
    required_env = ("FAKE_TOKEN",)
    Settings = FakeSettings
    endpoint_env = "FAKE_URL"
    default_endpoint = "https://api.fake.example"
    SDK_RETRIES = "none"
    ERRORS = (
        on(error=ProtocolError, message=r"^garbled"),
        on(SdkBusy, error=Unavailable),
        HTTP_STATUS,
        on(TimeoutError, error=OperationTimeout),
        on(ValueError, error=ProtocolError),
    )

    def new_client(self) -> FakeClient:
        return FakeClient()

    async def close_client(self, client: FakeClient) -> None:
        await client.close()

    def capabilities(self) -> Capabilities:
        raise NotImplementedError

    async def attach(self, client: FakeClient, sandbox_id: str) -> Any:
        return {"id": sandbox_id}

    def sandbox_id(self, sdk: Any) -> str:
        return sdk["id"]

    async def create(self, spec: SandboxSpec) -> Sandbox:
        async def start(client: FakeClient) -> dict:
            return {"id": f"sb-{len(self.clients.owned)}"}

        return await self.started("create", start, labels=spec.labels, lifetime_s=60)

    async def exec(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    write_file = read_file = list_sandboxes = exec

    async def destroy(self, sandbox: Sandbox) -> None:
        handle = await self.handle(sandbox, "destroy")
        async with self.idempotent("destroy", release=handle.client):
            raise WithStatus(404)


async def _raise_inside(provider: FakeProvider, exc: BaseException) -> BaseException:
    try:
        async with provider.translating("exec"):
            raise exc
    except BaseException as raised:  # noqa: BLE001 - what left the boundary is the point
        return raised
    raise AssertionError("nothing left the boundary")


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"bogus": 1}, r"[providers.fake]: unknown key(s) bogus (known: api_url, connection,"),
        ({"connection": "sometimes"}, "providers.fake.connection must be one of reuse"),
        ({"api_url": "ftp://x"}, "api_url must be an http:// or https:// URL"),
        ({"sdk_timeout_s": 0}, "providers.fake.sdk_timeout_s must be at least 0.001 s"),
        ({"region": 5}, "providers.fake.region must be a string"),
    ],
)
def test_settings_are_refused_the_same_way_for_every_adapter(table, message):
    with pytest.raises(SettingError) as raised:
        FakeProvider(table)
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_settings_environment_and_endpoint_come_from_the_declaration(monkeypatch):
    monkeypatch.setenv("FAKE_URL", "https://env.example/v1?token=secret")
    provider = FakeProvider({"region": "", "sdk_timeout_s": 5})
    assert provider.config.region is None  # an empty string means "not set"
    env = provider.environment()
    assert env["endpoint"] == "https://env.example/v1"  # scrubbed
    assert env["connection"] == "reuse" and env["sdk_timeout_s"] == 5.0
    assert env["sdk_retries"] == "none" and "api_url" not in env
    url = "https://user:pw@set.example/api"
    assert FakeProvider({"api_url": url}).environment()["endpoint"] == "https://set.example/api"
    assert "secret" not in json.dumps(env)


async def test_open_names_the_missing_credential_and_nothing_runs_before_open(monkeypatch):
    monkeypatch.delenv("FAKE_TOKEN", raising=False)
    provider = FakeProvider({})
    with pytest.raises(AuthError, match="set FAKE_TOKEN to use fake"):
        await provider.open()
    with pytest.raises(ProviderError, match="not open"):
        await provider.create(SandboxSpec())


async def test_per_iteration_gives_each_sandbox_a_client_closed_with_it(monkeypatch):
    monkeypatch.setenv("FAKE_TOKEN", "t")
    provider = FakeProvider({"connection": "per_iteration"})
    assert provider.connection is ConnectionMode.PER_ITERATION
    await provider.open()
    FakeClient.closed = 0
    first = await provider.create(SandboxSpec(labels={RUN_LABEL: "r"}))
    second = await provider.create(SandboxSpec())
    assert isinstance(first.native, Handle) and first.native.labels == {RUN_LABEL: "r"}
    assert first.native.client is not second.native.client is not provider.clients.main
    await provider.destroy(first)  # the SDK says 404: already gone counts as destroyed
    assert FakeClient.closed == 1 and provider.clients.owned == {second.native.client}
    await provider.destroy(Sandbox(id="bare", provider="fake"))  # attached on the main client
    await provider.close()
    assert FakeClient.closed == 3 and provider.clients.main is None


async def test_a_failed_create_closes_the_client_made_for_it(monkeypatch):
    monkeypatch.setenv("FAKE_TOKEN", "t")
    provider = FakeProvider({"connection": "per_iteration"})
    await provider.open()

    async def refuse(client: FakeClient) -> Any:
        raise WithStatus(429, retry_after="2.5")

    with pytest.raises(QuotaOrRateLimited) as raised:
        await provider.started("create", refuse, labels={}, lifetime_s=1)
    assert raised.value.retry_after_s == 2.5 and provider.clients.owned == set()
    await provider.close()


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (WithStatus(401), AuthError),
        (WithStatus(404), NotFound),
        (WithStatus(503), Unavailable),
        (SdkBusy("busy"), Unavailable),
        (TimeoutError(), OperationTimeout),
        (ValueError("no json"), ProtocolError),
        (ValueError("garbled answer"), ProtocolError),
        (KeyError("x"), ProviderError),
    ],
)
async def test_the_error_table_maps_sdk_exceptions_and_statuses(exc, expected):
    raised = await _raise_inside(FakeProvider({}), exc)
    assert type(raised) is expected
    assert raised.__cause__ is exc and raised.provider == "fake" and raised.operation == "exec"


async def test_a_cause_deep_in_the_chain_is_found_and_rules_apply_in_order():
    try:
        try:
            raise SdkBusy("pool exhausted")
        except SdkBusy as inner:
            raise RuntimeError("request failed") from inner
    except RuntimeError as outer:
        wrapped = outer
    assert type(await _raise_inside(FakeProvider({}), wrapped)) is Unavailable
    # A rule before HTTP_STATUS wins over the status; one after it loses to it.
    busy_404, value_404 = SdkBusy("busy"), ValueError("bad")
    busy_404.status_code = value_404.status_code = 404  # type: ignore[attr-defined]
    assert type(await _raise_inside(FakeProvider({}), busy_404)) is Unavailable
    assert type(await _raise_inside(FakeProvider({}), value_404)) is NotFound


async def test_errors_of_our_tree_and_cancellation_pass_through_unchanged():
    provider = FakeProvider({})
    mine = NotFound("gone", provider="fake")
    assert await _raise_inside(provider, mine) is mine
    cancelled = asyncio.CancelledError()
    assert await _raise_inside(provider, cancelled) is cancelled


async def test_a_status_the_sdk_dropped_is_taken_from_the_observed_response():
    provider = FakeProvider({})
    try:
        async with provider.translating("read_file"):
            observe_response(None)  # a request went out...
            observe_response(429, "7")  # ...and this came back; the SDK then raised:
            raise RuntimeError("something went wrong")
    except QuotaOrRateLimited as exc:
        assert exc.retry_after_s == 7.0
    else:
        raise AssertionError("not translated")
    observe_response(500)  # outside a boundary: ignored, no error


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from([ValueError, KeyError, TimeoutError, OSError, RuntimeError, SdkBusy]),
    st.one_of(st.none(), st.integers(min_value=100, max_value=599)),
    st.text(max_size=30),
)
def test_anything_an_sdk_raises_leaves_as_one_error_of_our_tree(kind, status, text):
    exc = kind(text)
    if status is not None:
        exc.status_code = status  # type: ignore[attr-defined]
    raised = asyncio.run(_raise_inside(FakeProvider({}), exc))
    assert isinstance(raised, ProviderError) and raised.__cause__ is exc
    assert raised.provider == "fake" and raised.operation == "exec"


# -- the stub provider ----------------------------------------------------------------------


async def test_the_stub_provider_needs_no_root_and_keeps_files_checkpoints_and_labels():
    assert "stub" in REGISTRY
    stub = provider_class("stub")({})
    await stub.open()
    sandbox = await stub.create(SandboxSpec(labels={RUN_LABEL: "run-1"}))
    assert (await stub.exec(sandbox, "exit 7", timeout_s=1)).exit_code == 0  # nothing runs
    await stub.write_file(sandbox, "/tmp/a", b"before")
    ref = await stub.checkpoint(sandbox)
    await stub.write_file(sandbox, "/tmp/a", b"after")
    restored = await stub.restore(ref)
    assert await stub.read_file(restored, "/tmp/a") == b"before"
    assert sorted(await stub.list_sandboxes("run-1")) == sorted([sandbox.id, restored.id])
    assert await stub.list_sandboxes("other") == []
    await stub.pause(sandbox)
    assert await stub.resume(sandbox) is sandbox
    for each in (sandbox, restored, sandbox):
        await stub.destroy(each)  # idempotent
    assert await stub.list_sandboxes("run-1") == []
    with pytest.raises(NotFound):
        await stub.read_file(sandbox, "/tmp/a")
    with pytest.raises(NotFound):
        await stub.read_file(restored, "/tmp/missing")
    await stub.delete_checkpoint(ref)
    with pytest.raises(NotFound):
        await stub.restore(ref)
    with pytest.raises(SettingError, match=r"\[providers.stub\]: unknown key"):
        provider_class("stub")({"state_dir": "/x"})
