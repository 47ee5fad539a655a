"""The shared helpers of the SDK adapter base (providers/sdk.py) that the eight cloud adapters
use instead of writing each their own: fork results, destroy by ``delete()``, unsupported
operations by their declared reason, SDK variables preset before import, bounded boundaries,
polling, undo on failure, recipes carried by checkpoints, async clients, statuses and delays
found where SDKs leave them, declared settings checks. Happy and unhappy paths, no SDK, no
root: the "SDK" is this test.
"""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest

from bench.records import Status
from bench.runner import MemorySink, Recorder, Runner, make_plan
from bench.workloads import WORKLOADS
from providers.base import RUN_LABEL, Capabilities, Op, Sandbox, SandboxSpec
from providers.errors import (
    NotFound,
    OperationTimeout,
    ProtocolError,
    ProviderError,
    QuotaOrRateLimited,
    Unavailable,
    Unsupported,
)
from providers.sdk import (
    HTTP_STATUS,
    Handle,
    SDKProvider,
    SDKSettings,
    on,
    preset_env,
    scratch_dir_setting,
    sdk_timeout,
)
from providers.settings import SettingError, setting

NO_PAUSE = "this provider sleeps on its own; there is no pause call"


class SdkGone(Exception):
    """Stands for an SDK's "no such sandbox"."""


class SdkSlow(TimeoutError):
    """Stands for an SDK's own timeout (a TimeoutError, not our deadline)."""


class WithStatus(Exception):
    def __init__(self, status: int, *, response: Any = None) -> None:
        super().__init__(f"answered {status}")
        self.status_code = status
        self.response = response


@dataclass
class Response:
    headers: dict[str, str]


class Client:
    """A client whose constructor is a coroutine (it "connects"), closed by ``close.aio``."""

    made: ClassVar[list[Client]] = []

    def __init__(self) -> None:
        self.closed = False
        self.close = self  # so that "close.aio" is a dotted path, as on Modal's client

    async def aio(self) -> None:
        self.closed = True


class Sdk:
    """The SDK's sandbox object."""

    def __init__(self, name: str, labels: dict[str, str] | None = None) -> None:
        self.name = name
        self.deleted = 0
        if labels is not None:
            self.labels = labels

    async def delete(self) -> None:
        self.deleted += 1
        if self.name.startswith("gone"):
            raise SdkGone(self.name)


@dataclass(frozen=True, kw_only=True)
class HelperSettings(SDKSettings):
    EXCLUSIVE = (("snapshot", "image"),)
    snapshot: str | None = setting(None, help="snapshot")
    image: str | None = setting(None, help="image")
    scratch_dir: str = scratch_dir_setting("/tmp")
    call_timeout_s: float = sdk_timeout(5.0, "bound on each call")
    setup_timeout_s: float = sdk_timeout(5.0, "bound on open()")


class Helped(SDKProvider[Client]):
    id = "helped"
    Settings = HelperSettings
    ID_ATTRIBUTE = "name"
    CLOSE = "close.aio"
    STATUS_IN_MESSAGE = r"\(status (\d{3})\)"
    ERRORS = (
        on(SdkGone, error=NotFound),
        HTTP_STATUS,
        on(TimeoutError, error=OperationTimeout),
        on(ConnectionError, error=Unavailable),
    )

    def __init__(self, settings: Any = None) -> None:
        super().__init__(settings)
        self.set_up: Any = None
        self.delay_s = 0.0

    async def new_client(self) -> Client:
        await asyncio.sleep(0)  # a constructor that awaits, as Modal's connects
        client = Client()
        Client.made.append(client)
        return client

    async def setup(self, client: Client) -> None:
        if isinstance(self.set_up, BaseException):
            raise self.set_up
        await asyncio.sleep(self.delay_s)
        self.set_up = client

    def capabilities(self) -> Capabilities:
        return self.capable(unsupported={Op.PAUSE: NO_PAUSE, Op.RESUME: NO_PAUSE}, notes={})

    def retry_after(self, chain: Any) -> float | None:
        return 9.0 if any("slow down" in str(e) for e in chain) else None

    async def attach(self, client: Client, sandbox_id: str) -> Sdk:
        if sandbox_id.startswith("missing"):
            raise SdkGone(sandbox_id)
        return Sdk(sandbox_id)

    async def delete(self, sandbox: Sandbox, handle: Handle[Client]) -> None:
        await asyncio.sleep(self.delay_s)
        await handle.sdk.delete()

    async def create(self, spec: SandboxSpec) -> Sandbox:
        async def start(client: Client) -> Sdk:
            await asyncio.sleep(self.delay_s)
            return Sdk(f"sb-{len(Client.made)}")

        return await self.started(
            Op.CREATE, start, labels=spec.labels, lifetime_s=60, recipe={"size": 2}
        )

    async def exec(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    write_file = read_file = exec

    async def list_sandboxes(self, run_id: str) -> list[str]:
        return []


@pytest.fixture
async def helped() -> Any:
    Client.made = []
    provider = Helped({"connection": "per_iteration"})
    await provider.open()
    try:
        yield provider
    finally:
        await provider.close()


def child(provider: Helped, name: str) -> Sandbox:
    return Sandbox(id=name, provider=provider.id, native=Handle(sdk=Sdk(name), client=Client()))


# -- fork results ------------------------------------------------------------------------------


async def test_a_fork_with_one_failed_child_destroys_the_others_and_raises_the_first_failure(
    helped: Helped,
) -> None:
    made = [child(helped, "c1"), child(helped, "c2")]
    with pytest.raises(Unavailable) as raised:  # the SDK's exception, translated
        await helped.forked([made[0], ConnectionError("first"), made[1], SdkGone("x")], 4)
    assert "first" in str(raised.value) and raised.value.operation == "fork"
    assert [c.native.sdk.deleted for c in made] == [1, 1]


async def test_fork_each_runs_the_children_at_once_and_keeps_them_when_all_start(
    helped: Helped,
) -> None:
    names = iter(["a", "b", "c"])
    started = 0

    async def one() -> Sandbox:
        nonlocal started
        started += 1
        await asyncio.sleep(0.01)
        return child(helped, next(names))

    children = await helped.fork_each(3, one)
    assert [c.id for c in children] == ["a", "b", "c"] and started == 3
    assert all(c.native.sdk.deleted == 0 for c in children)


async def test_fork_each_with_a_failing_child_destroys_the_started_ones(helped: Helped) -> None:
    calls, started = 0, []

    async def one() -> Sandbox:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise NotFound("no parent", provider="helped", operation="fork")
        started.append(child(helped, f"k{calls}"))
        return started[-1]

    with pytest.raises(NotFound, match="no parent"):
        await helped.fork_each(3, one)
    assert calls == 3 and [c.native.sdk.deleted for c in started] == [1, 1]


async def test_fewer_children_than_asked_is_a_protocol_error_and_they_are_destroyed(
    helped: Helped,
) -> None:
    only = child(helped, "only")
    with pytest.raises(ProtocolError, match="fork answered 1 results for 2 children"):
        await helped.forked([only], 2)
    assert only.native.sdk.deleted == 1


async def test_a_child_takes_the_labels_the_sdk_gives_it_else_the_parents(helped: Helped) -> None:
    parent = Handle(sdk=Sdk("p"), client=Client(), labels={RUN_LABEL: "r"}, lifetime_s=77)
    plain = helped.child(parent, Sdk("plain"))
    own = helped.child(parent, Sdk("own", labels={RUN_LABEL: "r", "k": "v"}))
    assert plain.id == "plain" and plain.native.labels == {RUN_LABEL: "r"}
    assert own.native.labels == {RUN_LABEL: "r", "k": "v"} and own.native.lifetime_s == 77
    assert plain.native.client is helped.clients.main  # children use the main client


# -- unsupported operations ------------------------------------------------------------------


async def test_an_operation_declared_unsupported_raises_its_reason(helped: Helped) -> None:
    caps = helped.capabilities()
    assert not caps.supports(Op.PAUSE) and caps.supports(Op.FORK) and caps.supports(Op.CREATE)
    assert caps.unsupported == {"pause": NO_PAUSE, "resume": NO_PAUSE}
    sandbox = child(helped, "s")
    for call in (helped.pause(sandbox), helped.resume(sandbox)):
        with pytest.raises(Unsupported) as raised:
            await call
        assert NO_PAUSE in str(raised.value)


async def test_the_runner_records_a_declared_unsupported_operation_as_unsupported() -> None:
    sink = MemorySink()
    provider = Helped({})
    runner = Runner(
        providers={"helped": provider},
        workloads={"pause_resume": WORKLOADS["pause_resume"]({})},
        spec=SandboxSpec(),
        recorder=Recorder(sink, run_id="unsupported-test", concurrency=1),
        timeout_s=10,
    )
    await runner.run(make_plan(["helped"], ["pause_resume"], iterations=1, warmup=0, seed=1))
    pauses = [s for s in sink.samples if s.operation in ("pause", "resume")]
    assert pauses and all(s.status is Status.UNSUPPORTED for s in pauses)
    assert all(s.error_message == NO_PAUSE and s.duration_s is None for s in pauses)
    assert not [s for s in sink.samples if s.status in (Status.ERROR, Status.TIMEOUT)]


def test_capabilities_name_the_connection_mode_before_the_adapters_own_note() -> None:
    reuse, per = Helped({}), Helped({"connection": "per_iteration"})
    assert reuse.capabilities().notes["connection"] == "reuse"
    caps = per.capable(notes={"stderr": "apart", "connection": "one pool"})
    assert list(caps.notes) == ["stderr", "connection"]
    assert caps.notes["connection"] == "per_iteration; one pool"
    assert caps.operations == frozenset(Op)  # nothing declared missing: everything


def test_what_the_sdk_retries_is_recorded_with_what_was_read_back() -> None:
    class Observing(Helped):
        SDK_RETRIES: ClassVar[dict[str, str]] = {"api": "off: retries=0"}

        def retries_observed(self) -> dict[str, Any]:
            return {"observed_retries": 0 if self.clients.main else "not opened yet"}

    assert Observing({}).environment()["sdk_retries"] == {
        "api": "off: retries=0",
        "observed_retries": "not opened yet",
    }

    class Texting(Observing):
        SDK_RETRIES = "none in the SDK"  # a text stays a text

    assert Texting({}).environment()["sdk_retries"] == "none in the SDK"


# -- SDK variables preset before the import ---------------------------------------------------


def test_a_preset_sdk_variable_is_set_unless_the_user_chose(monkeypatch) -> None:
    monkeypatch.delenv("HELPED_RETRIES", raising=False)
    source = preset_env("HELPED_RETRIES", "0", read_at_import_by="helped_sdk_not_imported")
    assert os.environ["HELPED_RETRIES"] == "0"
    assert source == "HELPED_RETRIES=0 set by the adapter before import"
    assert preset_env("HELPED_RETRIES", "5") == "HELPED_RETRIES=0 from the environment"
    assert os.environ["HELPED_RETRIES"] == "0"  # the user's (here: the first) value stays
    monkeypatch.delenv("HELPED_RETRIES")
    assert preset_env("HELPED_RETRIES", "0") == "HELPED_RETRIES=0 set by the adapter"


def test_a_preset_comes_too_late_when_the_sdk_read_it_at_an_earlier_import(monkeypatch) -> None:
    monkeypatch.delenv("HELPED_RETRIES", raising=False)
    monkeypatch.setitem(sys.modules, "helped_sdk", object())
    source = preset_env("HELPED_RETRIES", "0", read_at_import_by="helped_sdk")
    assert source == "helped_sdk was imported before the adapter: the environment at that time"
    assert "HELPED_RETRIES" not in os.environ  # nothing changed behind the SDK's back


# -- the bounded boundary ----------------------------------------------------------------------


async def test_a_bounded_boundary_turns_its_deadline_into_operation_timeout(helped: Helped) -> None:
    with pytest.raises(OperationTimeout) as raised:
        async with helped.translating(Op.EXEC, timeout_s=0.05):
            await asyncio.sleep(10)
    assert raised.value.operation == "exec"
    with pytest.raises(OperationTimeout, match=r"command did not finish within 0\.05 s"):
        async with helped.translating(Op.EXEC, timeout_s=0.05, late=helped.exec_late(0.05)):
            await asyncio.sleep(10)
    # The SDK's own timeout inside the deadline is the SDK's: translated, not "late".
    with pytest.raises(OperationTimeout, match="the sdk gave up"):
        async with helped.translating(Op.EXEC, timeout_s=5, late="never said"):
            raise SdkSlow("the sdk gave up")
    with (
        pytest.raises(TypeError, match="needs async with"),
        helped.translating(Op.EXEC, timeout_s=1),
    ):
        pass


async def test_call_timeout_s_bounds_the_calls_that_give_no_timeout_of_their_own() -> None:
    provider = Helped({"call_timeout_s": 0.05})
    await provider.open()
    try:
        provider.delay_s = 10
        with pytest.raises(OperationTimeout):
            await provider.create(SandboxSpec())
        with pytest.raises(OperationTimeout):
            async with provider.main(Op.LIST):
                await asyncio.sleep(10)
        with pytest.raises(OperationTimeout):
            await provider.destroy(Sandbox(id="slow", provider="helped"))
        async with provider.calling(Sandbox(id="s", provider="helped"), Op.EXEC, timeout_s=1):
            await asyncio.sleep(0.1)  # its own, longer timeout wins
    finally:
        await provider.close()
    assert Client.made and all(c.closed for c in Client.made)


# -- polling -------------------------------------------------------------------------------------


async def test_until_polls_with_growing_intervals_until_done(helped: Helped, monkeypatch) -> None:
    slept: list[float] = []
    real_sleep = asyncio.sleep

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        await real_sleep(0)

    monkeypatch.setattr(asyncio, "sleep", sleep)
    answers = iter([False, False, False, False, True])

    async def done() -> bool:
        return next(answers)

    await helped.until(done, 5, 0.1, backoff=2.0, max_interval_s=0.3)
    assert slept == [0.1, 0.2, 0.3, 0.3]


async def test_until_gives_up_at_its_deadline_with_the_late_message(helped: Helped) -> None:
    state = "pending"

    async def never() -> bool:
        return False

    with pytest.raises(OperationTimeout, match=r"still pending after 0\.05 s"):
        async with helped.translating(Op.CHECKPOINT):
            await helped.until(never, 0.05, 0.01, late=lambda: f"still {state} after 0.05 s")
    with pytest.raises(OperationTimeout):  # no late message: the bare deadline, translated
        async with helped.translating(Op.CHECKPOINT):
            await helped.until(never, 0.05, 0.01)

    async def broken() -> bool:
        raise ConnectionError("poll failed")

    with pytest.raises(Unavailable, match="poll failed"):  # a failing poll ends the wait
        async with helped.translating(Op.CHECKPOINT):
            await helped.until(broken, 5, 0.01, late=lambda: "never said")


# -- undo on failure ----------------------------------------------------------------------------


async def test_what_a_failed_block_made_is_undone_and_its_failure_goes_on(helped: Helped) -> None:
    undone: list[tuple[Any, ...]] = []

    async def undo(*args: Any, **kwargs: Any) -> None:
        undone.append((args, kwargs))

    async with helped.undone_on_failure(undo, "snap-1", team="t"):
        pass
    assert undone == []  # success: nothing undone
    with pytest.raises(ConnectionError, match="wait failed"):
        async with helped.undone_on_failure(undo, "snap-1", team="t"):
            raise ConnectionError("wait failed")
    assert undone == [(("snap-1",), {"team": "t"})]

    async def undo_fails(*args: Any) -> None:
        raise RuntimeError("could not delete")

    with pytest.raises(asyncio.CancelledError):  # a cancelled wait is undone too, and stays so
        async with helped.undone_on_failure(undo_fails):
            raise asyncio.CancelledError


# -- destroy, handles and recipes --------------------------------------------------------------


async def test_destroy_counts_what_is_already_gone_and_closes_the_sandboxs_client(
    helped: Helped,
) -> None:
    sandbox = await helped.create(SandboxSpec(labels={RUN_LABEL: "r"}))
    own = sandbox.native.client
    assert own is not helped.clients.main and not own.closed  # per_iteration
    await helped.destroy(sandbox)
    assert sandbox.native.sdk.deleted == 1 and own.closed and helped.clients.owned == set()
    await helped.destroy(Sandbox(id="missing-1", provider="helped"))  # NotFound at attach
    await helped.destroy(Sandbox(id="gone-1", provider="helped"))  # NotFound at delete
    with pytest.raises(ProviderError, match="not open"):
        await Helped({}).destroy(Sandbox(id="x", provider="helped"))


async def test_a_checkpoint_carries_the_recipe_and_labels_to_the_restore(helped: Helped) -> None:
    sandbox = await helped.create(SandboxSpec(labels={RUN_LABEL: "r"}))
    ref = helped.checkpoint_ref("ck-1", sandbox, sandbox.native, image="img")
    assert helped.saved(ref) == {"labels": {RUN_LABEL: "r"}, "lifetime_s": 60, "size": 2,
                                 "image": "img"}  # fmt: skip
    assert helped.saved_labels(ref) == ({RUN_LABEL: "r"}, 60)
    with pytest.raises(ProtocolError, match="carries no id"):
        helped.checkpoint_ref(None, sandbox, sandbox.native)
    bare = ref.__class__(id="ck-2", provider="helped", sandbox_id="x")
    assert helped.saved(bare) == {} and helped.saved_labels(bare)[0] == {}
    await helped.destroy(sandbox)


async def test_delete_by_id_on_the_main_client_is_idempotent(helped: Helped) -> None:
    async with helped.main("delete_checkpoint", missing_ok=True) as client:
        assert client is helped.clients.main
        raise SdkGone("no such snapshot")  # already gone: fine
    with pytest.raises(NotFound):
        async with helped.main("delete_checkpoint") as client:
            raise SdkGone("no such snapshot")


# -- clients, open and close ---------------------------------------------------------------------


async def test_an_async_client_constructor_and_a_dotted_close_method(helped: Helped) -> None:
    assert isinstance(helped.clients.main, Client) and helped.set_up is helped.clients.main
    async with helped.new_sandbox_client(Op.CREATE) as client:
        assert client is not helped.clients.main and client in helped.clients.owned
    await helped.close()
    assert all(c.closed for c in Client.made) and helped.clients.main is None


async def test_a_failed_or_late_setup_closes_the_clients_again() -> None:
    Client.made = []
    failing = Helped({})
    failing.set_up = ConnectionError("app lookup failed")
    with pytest.raises(Unavailable, match="app lookup failed") as raised:
        await failing.open()
    assert raised.value.operation == "open" and failing.clients.main is None
    slow = Helped({"setup_timeout_s": 0.05})
    slow.delay_s = 10
    with pytest.raises(OperationTimeout):
        await slow.open()
    assert slow.clients.main is None and len(Client.made) == 2
    assert all(c.closed for c in Client.made)


# -- answers: statuses, delays, output -------------------------------------------------------


async def _translated(provider: Helped, exc: BaseException) -> BaseException:
    try:
        async with provider.translating(Op.EXEC):
            raise exc
    except BaseException as raised:  # noqa: BLE001 - what left the boundary is the point
        return raised
    raise AssertionError("nothing left the boundary")


async def test_statuses_and_delays_are_found_where_sdks_leave_them(helped: Helped) -> None:
    # Retry-After on the exception's response (httpx-style SDK errors)
    limited = WithStatus(429, response=Response(headers={"Retry-After": "3"}))
    raised = await _translated(helped, limited)
    assert type(raised) is QuotaOrRateLimited and raised.retry_after_s == 3.0
    # a status only in the message
    assert type(await _translated(helped, RuntimeError("refused (status 503)"))) is Unavailable
    assert type(await _translated(helped, RuntimeError("refused (status 404)"))) is NotFound
    # no Retry-After anywhere: the adapter's retry_after() hook (a body, a gRPC policy)
    raised = await _translated(helped, RuntimeError("slow down (status 429)"))
    assert type(raised) is QuotaOrRateLimited and raised.retry_after_s == 9.0
    raised = await _translated(helped, RuntimeError("(status 429)"))
    assert type(raised) is QuotaOrRateLimited and raised.retry_after_s is None
    assert type(await _translated(helped, RuntimeError("no status here"))) is ProviderError


def test_exec_results_take_decoded_text_and_refuse_a_missing_exit_code() -> None:
    provider = Helped({})
    result = provider.exec_result(0, "héllo", None)
    assert (result.stdout, result.stderr) == ("héllo".encode(), b"")
    assert provider.exec_result(3, b"\xff", "").stdout == b"\xff"
    for code in (None, True, "0"):
        with pytest.raises(ProtocolError, match="carries no exit code"):
            provider.exec_result(code, b"", b"")
    assert provider.argv("echo $X") == ["/bin/sh", "-c", "echo $X"]
    assert provider.argv(["a b", 3], shell="sh") == ["a b", "3"]
    assert provider.argv("x", shell="sh")[0] == "sh"
    with pytest.raises(ValueError, match="exec needs a command"):
        provider.argv([])


def test_an_adapters_own_value_error_is_refused_as_a_provider_error() -> None:
    provider = Helped({})
    with (
        pytest.raises(ProviderError, match="beyond every plan") as raised,
        provider.refusing(Op.CREATE),
    ):
        raise ValueError("64 vCPU is beyond every plan")
    assert type(raised.value) is ProviderError and raised.value.operation == "create"


# -- declared settings checks --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"snapshot": "s", "image": "i"}, "set snapshot or image, not both"),
        ({"scratch_dir": "tmp/x"}, "scratch_dir must be an absolute path"),
    ],
)
def test_checks_across_keys_are_declared_and_refused_in_one_line(table, message) -> None:
    with pytest.raises(SettingError, match=message) as raised:
        Helped(table)
    assert "\n" not in str(raised.value)
    assert Helped({"snapshot": "s", "scratch_dir": "/x"}).config.scratch_dir == "/x"
