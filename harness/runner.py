"""Run matrix scenarios against a client under test and compare with the oracle.

Theory of operation:

* One mock EMS is started per presented certificate and shared by every
  scenario that presents it (the presented certificate depends on the EMS
  version and the *use SSL certificate* setting, see
  :attr:`~harness.matrix.MatrixScenario.presented_kind`).
* Scenarios run on a thread pool. Each one gets its own empty folder in
  the run's scratch folder for the client's remembered-certificate file,
  so scenarios never share state.
* The expected outcome comes from the oracle, which sees only declared
  properties; the observed outcome comes from the client, which sees only
  bytes. :func:`compare` turns the pair into a :class:`ScenarioResult`.
* A scenario that does not finish within its deadline becomes a
  ``timeout`` result and the run goes on without it; a client that is not
  installed makes every scenario ``skipped`` with the install hint.

The runner core needs only the :class:`ClientDriver` protocol; the drivers
for the reference client and the adapters are at the end of this module.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import datetime as dt
import enum
import hashlib
import logging
import os
import queue
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from harness.assumptions import Assumptions
from harness.matrix import Matrix, MatrixScenario
from harness.model import Action, ActionSource, Answer, CnFallback, Reason
from harness.oracle.standards import expected_reasons_for_kind
from harness.pki.kinds import CATALOGUE
from harness.pki.lab import Lab

if TYPE_CHECKING:
    from harness.adapters.base import Adapter
    from harness.ems.server import MockEms
    from harness.endpoint.validation import TrustStore

logger = logging.getLogger(__name__)


class Status(enum.StrEnum):
    """Final state of one scenario in a run."""

    AGREE = "agree"
    DISAGREE = "disagree"
    EXPECTED_DEVIATION = "expected-deviation"
    ERROR = "error"
    TIMEOUT = "timeout"
    SKIPPED = "skipped"


# Statuses that count as passing for the exit code.
PASSING = frozenset({Status.AGREE, Status.EXPECTED_DEVIATION})


@dataclass(frozen=True)
class Expectation:
    """The oracle's requirement on a client in one scenario.

    Attributes:
        connected: Whether the client must connect.
        prompted: Whether it must prompt; ``None`` where prompting does not
            apply (plain TLS clients).
        outcome: The documented outcome name, or ``accept``/``reject`` for
            plain TLS clients.
        reasons: Invalidity reasons, in report order.
        check_reasons: Whether the observed reasons must equal ``reasons``.
            Plain TLS clients report no reliable reason, so only their
            accept or reject verdict is compared.
    """

    connected: bool
    prompted: bool | None
    outcome: str
    reasons: tuple[str, ...] = ()
    check_reasons: bool = True


@dataclass(frozen=True)
class Observed:
    """A client's observed behaviour in one scenario.

    Attributes:
        connected: Whether it connected (accepted the certificate).
        prompted: Whether it prompted; ``None`` where unknown.
        outcome: Its outcome name, or ``accept``/``reject`` for plain TLS.
        reasons: The reasons it reported, in report order.
        detail: A short context string (error text, command line).
    """

    connected: bool
    prompted: bool | None
    outcome: str
    reasons: tuple[str, ...] = ()
    detail: str = ""


@dataclass(frozen=True)
class ScenarioResult:
    """The result of one scenario for one client.

    Attributes:
        client: Name of the client under test.
        scenario: The matrix scenario.
        status: How the comparison ended.
        expected: The oracle's expectation; ``None`` if it could not be made.
        observed: What the client did; ``None`` on error, timeout or skip.
        detail: Why the status is what it is, in one line.
        duration: Wall-clock seconds spent on the scenario.
    """

    client: str
    scenario: MatrixScenario
    status: Status
    expected: Expectation | None
    observed: Observed | None
    detail: str = ""
    duration: float = 0.0

    @property
    def id(self) -> str:
        """``CLIENT:SCENARIO-ID``, unique within a run."""
        return f"{self.client}:{self.scenario.id}"


@dataclass(frozen=True)
class RunResult:
    """Everything a report needs about a finished run.

    Attributes:
        results: One result per (client, scenario), in matrix order.
        matrices: The matrix each client ran, by client name.
        cn_fallback: The run's ``cn_fallback`` mode.
        started: Start time, seconds since the epoch.
        duration: Wall-clock seconds of the whole run.
        jobs: Number of concurrent scenarios.
        server_failures: Failures inside mock EMS threads; any makes the
            run fail, because the observations may be unreliable.
    """

    results: tuple[ScenarioResult, ...]
    matrices: dict[str, Matrix] = field(default_factory=dict)
    cn_fallback: CnFallback = CnFallback.WHEN_NO_SAN
    started: float = 0.0
    duration: float = 0.0
    jobs: int = 1
    server_failures: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        """Whether every scenario agreed or deviated as documented."""
        if self.server_failures:
            return False
        return all(result.status in PASSING for result in self.results)


class ClientError(Exception):
    """The client failed without a verdict (connection refused, crash)."""


class ServerAddress(Protocol):
    """Listening address of a mock EMS."""

    @property
    def host(self) -> str: ...

    @property
    def port(self) -> int: ...


class ServerPool(Protocol):
    """Hands out a running server per presented kind."""

    def address(self, kind: str) -> ServerAddress: ...


class ClientDriver(Protocol):
    """A client under test, as the runner drives it."""

    name: str

    def availability(self) -> tuple[bool, str]:
        """Return whether the client can run here, and why not."""
        ...

    def expectation(self, scenario: MatrixScenario) -> Expectation:
        """Return the oracle's expectation for ``scenario``."""
        ...

    def observe(
        self,
        scenario: MatrixScenario,
        server: ServerAddress,
        workdir: Path,
        timeout: float,
    ) -> Observed:
        """Connect once with the settings of ``scenario``; return the observation."""
        ...

    def deviation(self, scenario: MatrixScenario, observed: Observed) -> str | None:
        """Return the documented reason if ``observed`` is a known deviation."""
        ...


def compare(
    client: str,
    scenario: MatrixScenario,
    expected: Expectation,
    observed: Observed,
    deviation: Callable[[MatrixScenario, Observed], str | None],
    duration: float,
) -> ScenarioResult:
    """Compare an observed outcome with the expectation.

    Connected, prompted (where both sides know it), outcome name and reasons
    must all agree. A mismatch that the client's deviation table documents
    becomes ``expected-deviation`` with the documented reason.
    """
    mismatches = differences(expected, observed)
    if not mismatches:
        return ScenarioResult(
            client, scenario, Status.AGREE, expected, observed, "", duration
        )
    detail = "; ".join(mismatches)
    known = deviation(scenario, observed)
    status = Status.DISAGREE
    if known is not None:
        status = Status.EXPECTED_DEVIATION
        detail = f"{known} ({detail})"
    return ScenarioResult(
        client, scenario, status, expected, observed, detail, duration
    )


def differences(expected: Expectation, observed: Observed) -> list[str]:
    """Return one ``field: expected X, observed Y`` line per differing field."""
    found: list[str] = []
    if expected.connected != observed.connected:
        found.append(
            f"connected: expected {expected.connected}, observed {observed.connected}"
        )
    if (
        expected.prompted is not None
        and observed.prompted is not None
        and expected.prompted != observed.prompted
    ):
        found.append(
            f"prompted: expected {expected.prompted}, observed {observed.prompted}"
        )
    if expected.outcome != observed.outcome:
        found.append(
            f"outcome: expected {expected.outcome}, observed {observed.outcome}"
        )
    if expected.check_reasons and expected.reasons != observed.reasons:
        found.append(
            f"reasons: expected [{', '.join(expected.reasons)}], "
            f"observed [{', '.join(observed.reasons)}]"
        )
    return found


def _expect(
    driver: ClientDriver, scenario: MatrixScenario
) -> Expectation | ScenarioResult:
    """Return the oracle's expectation, or an ``error`` result if the oracle fails."""
    started = time.monotonic()
    try:
        return driver.expectation(scenario)
    except Exception as exc:  # the oracle's failure is a result, not a crash
        logger.exception("oracle failed on %s", scenario.id)
        return ScenarioResult(
            driver.name,
            scenario,
            Status.ERROR,
            None,
            None,
            f"oracle failed: {type(exc).__name__}: {exc}",
            time.monotonic() - started,
        )


def _run_one(
    driver: ClientDriver,
    scenario: MatrixScenario,
    expected: Expectation,
    servers: ServerPool,
    workdir: Path,
    timeout: float,
) -> ScenarioResult:
    started = time.monotonic()
    try:
        server = servers.address(scenario.presented_kind)
        with _scenario_folder(workdir):
            observed = driver.observe(scenario, server, workdir, timeout)
    except TimeoutError as exc:
        return ScenarioResult(
            driver.name,
            scenario,
            Status.TIMEOUT,
            expected,
            None,
            f"timed out: {exc}",
            time.monotonic() - started,
        )
    except Exception as exc:  # every client failure is reported per scenario
        logger.debug("client %s failed on %s", driver.name, scenario.id, exc_info=True)
        return ScenarioResult(
            driver.name,
            scenario,
            Status.ERROR,
            expected,
            None,
            f"{type(exc).__name__}: {exc}",
            time.monotonic() - started,
        )
    return compare(
        driver.name,
        scenario,
        expected,
        observed,
        driver.deviation,
        time.monotonic() - started,
    )


@contextlib.contextmanager
def _scenario_folder(path: Path) -> Iterator[None]:
    """Create the empty folder ``path``; remove it and its files on exit.

    Cheaper than a ``TemporaryDirectory`` per scenario, because the name is
    already unique within the run's scratch folder and a client normally
    leaves only files; anything else falls back to ``shutil.rmtree``.
    """
    os.mkdir(path, 0o700)
    try:
        yield
    finally:
        try:
            for name in os.listdir(path):
                os.unlink(path / name)
            os.rmdir(path)
        except OSError:
            shutil.rmtree(path, ignore_errors=True)


def skipped_results(
    client: str, scenarios: Sequence[MatrixScenario], reason: str
) -> list[ScenarioResult]:
    """Return a ``skipped`` result per scenario, with ``reason`` as detail."""
    return [
        ScenarioResult(client, scenario, Status.SKIPPED, None, None, reason)
        for scenario in scenarios
    ]


def run_scenarios(
    driver: ClientDriver,
    scenarios: Sequence[MatrixScenario],
    servers: ServerPool,
    *,
    jobs: int,
    timeout: float,
    on_result: Callable[[ScenarioResult], None] | None = None,
) -> list[ScenarioResult]:
    """Run ``scenarios`` against ``driver`` on ``jobs`` threads.

    Args:
        driver: The client under test.
        scenarios: Scenarios to run.
        servers: Running servers by presented kind.
        jobs: Number of scenarios in flight at once (at least 1).
        timeout: Seconds one connection attempt may take, passed to the
            client. The runner gives up on a scenario after twice this plus
            one second, because a client may ignore its own timeout.
        on_result: Called from the calling thread after each result.

    Returns:
        One result per scenario, in the order of ``scenarios``.
    """
    available, reason = driver.availability()
    if not available:
        skipped = skipped_results(driver.name, scenarios, reason)
        for result in skipped:
            if on_result is not None:
                on_result(result)
        return skipped

    deadline_per_scenario = 2 * timeout + 1.0
    results: dict[int, ScenarioResult] = {}
    with contextlib.ExitStack() as stack:
        scratch = Path(
            stack.enter_context(
                tempfile.TemporaryDirectory(
                    prefix="harness-run-", dir=_scratch_parent()
                )
            )
        )
        pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=max(1, jobs), thread_name_prefix=f"run-{driver.name}"
        )
        # A stuck client thread must not hold the run: on exit, cancel what
        # has not started and do not wait for threads that overran.
        stack.callback(pool.shutdown, wait=False, cancel_futures=True)

        def submit(index: int) -> concurrent.futures.Future[ScenarioResult]:
            # The oracle runs here, in the submitting thread, while the
            # workers wait on the network, so a worker only connects and
            # observes. At most two scenarios per worker wait between this
            # and the connection, so the oracle's clock stays that close.
            scenario = scenarios[index]
            expected = _expect(driver, scenario)
            if isinstance(expected, ScenarioResult):
                failed: concurrent.futures.Future[ScenarioResult] = (
                    concurrent.futures.Future()
                )
                failed.set_result(expected)
                return failed
            workdir = scratch / str(index)
            return pool.submit(
                _run_one, driver, scenario, expected, servers, workdir, timeout
            )

        collected = _collect(
            submit,
            scenarios,
            driver.name,
            deadline_per_scenario,
            window=_IN_FLIGHT_PER_JOB * max(1, jobs),
        )
        for index, result in collected:
            results[index] = result
            if on_result is not None:
                on_result(result)
    return [results[index] for index in range(len(scenarios))]


# RAM-backed folder for per-scenario client state, where the OS has one.
# The reference client fsyncs its remembered-certificate file on every
# write, and on a disk-backed folder those writes and the per-scenario
# folder creation and removal took about 40% of the worker threads' time.
_RAM_FOLDER = Path("/dev/shm")


def _scratch_parent() -> Path | None:
    """Return the RAM-backed folder if it is usable, else ``None`` (the default)."""
    if _RAM_FOLDER.is_dir() and os.access(_RAM_FOLDER, os.W_OK | os.X_OK):
        return _RAM_FOLDER
    return None


# Futures submitted per worker thread at a time. Submitting the whole matrix
# at once kept thousands of futures pending, and the overrun check walks
# every pending future after each result.
_IN_FLIGHT_PER_JOB = 2


def _collect(
    submit: Callable[[int], concurrent.futures.Future[ScenarioResult]],
    scenarios: Sequence[MatrixScenario],
    client: str,
    deadline: float,
    *,
    window: int,
) -> Iterator[tuple[int, ScenarioResult]]:
    """Submit scenarios by index, at most ``window`` in flight, and yield results.

    Results come in completion order; a scenario running longer than
    ``deadline`` seconds becomes a ``timeout`` result.
    """
    futures: dict[concurrent.futures.Future[ScenarioResult], int] = {}
    started_at: dict[concurrent.futures.Future[ScenarioResult], float] = {}
    # Finished futures arrive here from their done callbacks, which is
    # cheaper than concurrent.futures.wait: that registers and removes a
    # waiter on every pending future per call.
    finished: queue.SimpleQueue[concurrent.futures.Future[ScenarioResult]] = (
        queue.SimpleQueue()
    )
    next_index = 0
    while next_index < len(scenarios) or futures:
        while next_index < len(scenarios) and len(futures) < window:
            future = submit(next_index)
            futures[future] = next_index
            future.add_done_callback(finished.put)
            next_index += 1
        done: list[concurrent.futures.Future[ScenarioResult]] = []
        with contextlib.suppress(queue.Empty):
            done.append(finished.get(timeout=0.5))
            while True:
                done.append(finished.get_nowait())
        for future in done:
            index = futures.pop(future, None)
            if index is None:
                continue  # reported as a timeout when it overran
            started_at.pop(future, None)
            yield index, future.result()
        now = time.monotonic()
        for future in list(futures):
            if future.running():
                started_at.setdefault(future, now)
            if future not in started_at or now - started_at[future] <= deadline:
                continue
            index = futures.pop(future)
            scenario = scenarios[index]
            logger.warning(
                "scenario %s of %s overran %.1f s", scenario.id, client, deadline
            )
            overdue = ScenarioResult(
                client,
                scenario,
                Status.TIMEOUT,
                None,
                None,
                f"no result within {deadline:.1f} s; the client hung",
                now - started_at.pop(future),
            )
            yield index, overdue


# -- servers -----------------------------------------------------------------


class MockEmsPool:
    """One running mock EMS per presented kind, started on first use.

    Use it as a context manager; leaving it stops every server it started.
    A failure inside a server thread does not end the run: it is logged and
    kept in :attr:`failures` for the caller to report.
    """

    def __init__(self, lab: Lab, *, start_timeout: float = 10.0) -> None:
        self.lab = lab
        self.start_timeout = start_timeout
        self.failures: list[str] = []
        self._servers: dict[str, MockEms] = {}
        self._lock = threading.Lock()

    def address(self, kind: str) -> MockEms:
        """Return the running server that presents ``kind``."""
        with self._lock:
            server = self._servers.get(kind)
            if server is None:
                from harness.ems.server import MockEms

                # No profile action: a profile would change the client's
                # action for the next connection, and scenarios set it.
                server = MockEms.from_kind(
                    self.lab, kind, profile_action=None, commands=()
                )
                server.start(timeout=self.start_timeout)
                self._servers[kind] = server
                logger.debug("mock EMS for %s on %s:%s", kind, server.host, server.port)
            return server

    def close(self) -> None:
        """Stop every server; record what failed in a server thread."""
        with self._lock:
            servers, self._servers = self._servers, {}
        for kind, server in servers.items():
            try:
                server.stop()
            except Exception as exc:  # reported by the caller, never lost
                logger.error("mock EMS for %s failed: %s", kind, exc)
                self.failures.append(f"mock EMS for {kind}: {exc}")

    def __enter__(self) -> MockEmsPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


# -- drivers -----------------------------------------------------------------


# Remembered state, server host and port, reference identity, client version.
_MemoryKey = tuple[str, str, int, str, str]


class ReferenceDriver:
    """Drives the reference endpoint client; the oracle supplies expectations.

    Args:
        lab: The built lab (trust store, build time).
        cn_fallback: The run's ``cn_fallback`` mode, for oracle and client.
    """

    name = "reference"

    def __init__(self, lab: Lab, cn_fallback: CnFallback) -> None:
        self.lab = lab
        self.assumptions = Assumptions(cn_fallback=cn_fallback)
        self._trust_store: TrustStore | None = None
        self._trust_store_lock = threading.Lock()
        # Remembered-certificate files made for a first scenario, by
        # (remembered state, host, port, reference identity, client version).
        self._remembered_files: dict[_MemoryKey, bytes] = {}
        self._remembered_key_locks: dict[_MemoryKey, threading.Lock] = {}
        self._remembered_lock = threading.Lock()

    @property
    def trust_store(self) -> TrustStore:
        """The lab's trust store, loaded on first use and shared by every client.

        Raises:
            TrustStoreError: the lab's trust store cannot be read; each
                scenario that needs it then reports this as its error.
        """
        from harness.endpoint.validation import TrustStore

        with self._trust_store_lock:
            if self._trust_store is None:
                self._trust_store = TrustStore.load(self.lab.trust_store_path)
            return self._trust_store

    def availability(self) -> tuple[bool, str]:
        return True, "built in"

    def expectation(self, scenario: MatrixScenario) -> Expectation:
        from harness.oracle.decision import Remembered, Scenario, expected_outcome

        oracle_scenario = Scenario(
            kind=CATALOGUE[scenario.kind],
            ems_version=scenario.ems_version or "",
            use_ssl_cert=scenario.use_ssl_cert,
            client_version=scenario.client_version or "",
            action=scenario.action,
            action_source=None if scenario.action is None else ActionSource.PROFILE,
            answer=scenario.answer,
            remembered=scenario.remembered or Remembered.NONE,
            assumptions=self.assumptions,
            built_at=self.lab.built_at,
            now=dt.datetime.now(dt.UTC),
        )
        expected = expected_outcome(oracle_scenario)
        return Expectation(
            connected=expected.connected,
            prompted=expected.prompted,
            outcome=expected.outcome.value,
            reasons=tuple(reason.value for reason in expected.reasons),
        )

    def observe(
        self,
        scenario: MatrixScenario,
        server: ServerAddress,
        workdir: Path,
        timeout: float,
    ) -> Observed:
        from harness.endpoint.client import EndpointClient

        memory = workdir / "remembered.json"
        reference = CATALOGUE[scenario.kind].reference_identity
        version = scenario.client_version or ""
        self._set_up_memory(scenario, server, memory, timeout)

        prompts: list[object] = []

        def prompt(info: object) -> Answer:
            prompts.append(info)
            # A prompt the oracle does not expect is answered deny; the
            # comparison reports the unexpected prompt.
            return scenario.answer or Answer.DENY

        client = EndpointClient(
            version,
            self.trust_store,
            action=scenario.action,
            action_source=None if scenario.action is None else ActionSource.PROFILE,
            memory_path=memory,
            assumptions=self.assumptions,
            prompt=prompt,
            timeout=timeout,
            persist_profile=False,
            telemetry_idle=0.0,
        )
        observation = client.connect(server.host, server.port, servername=reference)
        return Observed(
            connected=observation.connected,
            prompted=observation.prompted,
            outcome=observation.outcome.value,
            reasons=tuple(reason.value for reason in observation.reasons),
            detail=observation.error or "",
        )

    def _set_up_memory(
        self,
        scenario: MatrixScenario,
        server: ServerAddress,
        memory: Path,
        timeout: float,
    ) -> None:
        """Create the remembered state ``scenario`` starts from."""
        from harness.endpoint.memory import MemoryFile
        from harness.oracle.decision import Remembered

        reference = CATALOGUE[scenario.kind].reference_identity
        if scenario.remembered is Remembered.THIS_LEAF:
            self._remember_this_leaf(scenario, server, memory, timeout)
        elif scenario.remembered is Remembered.OTHER_LEAF:
            # Another leaf, allowed for every reason there is.
            other = hashlib.sha256(b"another leaf of this EMS").hexdigest()
            key = ("other-leaf", server.host, server.port, reference, "")
            self._copy_or_make(
                key,
                memory,
                lambda: MemoryFile(memory).remember(
                    reference, server.port, other, frozenset(Reason)
                ),
            )

    def _remember_this_leaf(
        self,
        scenario: MatrixScenario,
        server: ServerAddress,
        memory: Path,
        timeout: float,
    ) -> None:
        """Remember the presented leaf the way a user does: warn, prompt, allow.

        The file this leaves behind depends only on the server, the reference
        identity and the client version, so the first scenario with that key
        makes the connection and later ones get a copy of its file.
        """
        from harness.endpoint.client import EndpointClient

        reference = CATALOGUE[scenario.kind].reference_identity
        version = scenario.client_version or ""

        def connect_and_allow() -> None:
            first = EndpointClient(
                version,
                self.trust_store,
                action=Action.WARN,
                action_source=ActionSource.PROFILE,
                memory_path=memory,
                assumptions=self.assumptions,
                prompt=lambda info: Answer.ALLOW,
                timeout=timeout,
                persist_profile=False,
                telemetry_idle=0.0,
            )
            first.connect(server.host, server.port, servername=reference)

        key = ("this-leaf", server.host, server.port, reference, version)
        self._copy_or_make(key, memory, connect_and_allow)

    def _copy_or_make(
        self, key: _MemoryKey, memory: Path, make: Callable[[], None]
    ) -> None:
        """Write the cached file for ``key`` to ``memory``, or ``make`` it first.

        A first ``make`` that leaves no file is not cached, so the next
        scenario with that key makes it again.
        """
        with self._remembered_lock:
            key_lock = self._remembered_key_locks.setdefault(key, threading.Lock())
        with key_lock:
            content = self._remembered_files.get(key)
            if content is None:
                make()
                if memory.exists():
                    self._remembered_files[key] = memory.read_bytes()
                return
        # The client writes this file with mode 0600; the copy keeps it.
        fd = os.open(memory, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)

    def deviation(self, scenario: MatrixScenario, observed: Observed) -> str | None:
        # The reference client has no documented deviations.
        return None


class AdapterDriver:
    """Drives a plain TLS client adapter; standards validation is the verdict.

    A valid certificate must be accepted and an invalid one rejected.
    Differences listed in the adapters' deviation table become
    ``expected-deviation`` results.
    """

    def __init__(self, adapter: Adapter, lab: Lab, cn_fallback: CnFallback) -> None:
        self.adapter = adapter
        self.name = adapter.name
        self.lab = lab
        self.cn_fallback = cn_fallback

    def availability(self) -> tuple[bool, str]:
        return self.adapter.availability()

    def expectation(self, scenario: MatrixScenario) -> Expectation:
        kind = CATALOGUE[scenario.kind]
        reasons = expected_reasons_for_kind(
            kind, scenario.cn_fallback, self.lab.built_at, dt.datetime.now(dt.UTC)
        )
        return Expectation(
            connected=not reasons,
            prompted=None,
            outcome="reject" if reasons else "accept",
            reasons=tuple(reason.value for reason in reasons),
            check_reasons=False,
        )

    def observe(
        self,
        scenario: MatrixScenario,
        server: ServerAddress,
        workdir: Path,
        timeout: float,
    ) -> Observed:
        result = self.adapter.check(
            host=server.host,
            port=server.port,
            servername=CATALOGUE[scenario.kind].reference_identity,
            cafile=self.lab.trust_store_path,
            timeout=timeout,
        )
        command = " ".join(result.command)
        if result.status == "timeout":
            raise TimeoutError(result.detail)
        if result.status in ("error", "skipped"):
            raise ClientError(f"{result.status}: {result.detail} [{command}]")
        accepted = result.status == "accepted"
        return Observed(
            connected=accepted,
            prompted=None,
            outcome="accept" if accepted else "reject",
            reasons=tuple(reason.value for reason in result.reasons_hint),
            detail=f"{result.detail} [{command}]".strip(),
        )

    def deviation(self, scenario: MatrixScenario, observed: Observed) -> str | None:
        from harness.adapters import lookup_deviation

        found = lookup_deviation(self.name, scenario.kind, scenario.cn_fallback)
        return None if found is None else found.reason
