"""Result collection in ``run_scenarios``: order, overruns and scenario folders.

The driver here plays a client that ignores its own timeout, which no real
client in the project does on purpose. It opens no connection.
"""

from __future__ import annotations

import threading
from pathlib import Path

from harness.matrix import MatrixScenario
from harness.runner import Expectation, Observed, ServerAddress, Status, run_scenarios

HUNG_KIND = "hung"
TIMEOUT = 0.1


class _Address:
    host = "127.0.0.1"
    port = 9


class _Servers:
    def address(self, kind: str) -> ServerAddress:
        return _Address()


class _HangingDriver:
    """Connects at once, except for scenarios of ``HUNG_KIND``, which hang."""

    name = "hanging"

    def __init__(self) -> None:
        self.release = threading.Event()
        self.workdirs: list[Path] = []
        self.lock = threading.Lock()

    def availability(self) -> tuple[bool, str]:
        return True, "test driver"

    def expectation(self, scenario: MatrixScenario) -> Expectation:
        return Expectation(connected=True, prompted=False, outcome="connected")

    def observe(
        self,
        scenario: MatrixScenario,
        server: ServerAddress,
        workdir: Path,
        timeout: float,
    ) -> Observed:
        with self.lock:
            self.workdirs.append(workdir)
        # A folder the client leaves files in must still be removed.
        (workdir / "remembered.json").write_text("{}")
        if scenario.kind == HUNG_KIND:
            self.release.wait(timeout=30.0)
        return Observed(connected=True, prompted=False, outcome="connected")

    def deviation(self, scenario: MatrixScenario, observed: Observed) -> str | None:
        return None


def test_overrun_becomes_timeout() -> None:
    scenarios = [
        MatrixScenario(kind="first"),
        MatrixScenario(kind=HUNG_KIND),
        *(MatrixScenario(kind=f"after-{index}") for index in range(6)),
    ]
    driver = _HangingDriver()
    try:
        results = run_scenarios(driver, scenarios, _Servers(), jobs=2, timeout=TIMEOUT)
    finally:
        driver.release.set()

    assert [result.scenario for result in results] == scenarios
    statuses = [result.status for result in results]
    assert statuses[1] is Status.TIMEOUT
    assert "hung" in results[1].detail
    assert statuses[:1] + statuses[2:] == [Status.AGREE] * 7


def test_scenario_folders_are_fresh_and_removed() -> None:
    scenarios = [MatrixScenario(kind=f"kind-{index}") for index in range(5)]
    driver = _HangingDriver()

    results = run_scenarios(driver, scenarios, _Servers(), jobs=2, timeout=TIMEOUT)

    assert [result.status for result in results] == [Status.AGREE] * 5
    assert len(set(driver.workdirs)) == 5
    assert not any(path.exists() for path in driver.workdirs)
