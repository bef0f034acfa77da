"""Server-side fuzzing of the mock EMS over loopback.

The campaign size comes from ``HARNESS_FUZZ_INPUTS`` (default 300, a few
seconds); set it to 10000 for the long campaign.
"""

from __future__ import annotations

import os

import pytest

from harness.fuzz.server import (
    ServerInput,
    capture_client_hello,
    mutate,
    run_server_campaign,
)
from harness.pki import Lab

CAMPAIGN_INPUTS = int(os.environ.get("HARNESS_FUZZ_INPUTS", "300"))


def test_client_hello_is_tls_handshake_record() -> None:
    hello = capture_client_hello()

    assert hello[0] == 0x16
    assert int.from_bytes(hello[3:5], "big") == len(hello) - 5


def test_mutate_truncate_and_flip() -> None:
    data = bytes(range(10))

    assert mutate(data, [("truncate", 4, 0)]) == bytes(range(4))
    assert mutate(data, [("flip", 0, 0)])[0] == 1
    assert mutate(b"", [("set", 3, 7)]) == b"\x07"


def test_server_input_json_round_trip() -> None:
    item = ServerInput("frames", b"EMST\x01\x01\x00\x00\x00\x02{}", (3, 7))

    assert ServerInput.from_json(item.to_json()) == item
    assert b"".join(item.pieces()) == item.data
    assert len(item.pieces()) == 3


def test_server_campaign_no_findings(cert_lab: Lab) -> None:
    report = run_server_campaign(
        cert_lab, max_inputs=CAMPAIGN_INPUTS, budget=3600.0, seed=0
    )

    assert report.inputs == CAMPAIGN_INPUTS
    assert [f.problem for f in report.findings] == []
    assert set(report.by_kind) == {"raw", "client-hello", "handshake", "frames"}
    assert report.before is not None and report.after is not None
    assert report.after.threads == report.before.threads
    assert report.after.fds == report.before.fds


@pytest.mark.parametrize("kind", ["raw", "client-hello", "handshake"])
def test_empty_input_closes(cert_lab: Lab, kind: str) -> None:
    from harness.fuzz.server import replay_server_input

    assert replay_server_input(cert_lab, ServerInput(kind, b"\x16\x03")) == []


def test_server_campaign_reports_rss_growth(cert_lab: Lab) -> None:
    # Each input retains 512 KiB, so 200 inputs outgrow the RSS bound the way
    # a server leaking per connection would.
    retained: list[bytes] = []

    def leak(_: int) -> None:
        retained.append(os.urandom(512 * 1024))

    report = run_server_campaign(
        cert_lab, max_inputs=200, budget=600.0, seed=0, progress=leak
    )
    retained.clear()

    problems = [f.problem for f in report.findings]
    assert any(p.startswith("not back at baseline: RSS grew") for p in problems)
    assert report.inputs == 200


def test_server_campaign_spans_batches(cert_lab: Lab) -> None:
    report = run_server_campaign(
        cert_lab, max_inputs=120, budget=600.0, seed=0, batch_inputs=50
    )

    assert report.inputs == 120
    assert [f.problem for f in report.findings] == []
    assert report.warm is not None
