"""Saved findings: one small JSON file per finding, replayable by tests.

Every file carries ``"target"`` (``server``, ``client`` or ``differential``),
the input (base64 bytes for the server, PEM for certificates), the trust
store it was judged against and the verdicts seen. A certificate finding
also holds the leaf's private key, because replaying it means serving it
over TLS again. That key belongs to a throwaway leaf under a lab CA that
only the finding's own trust store contains. Files holding a key are
written with mode 0600.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed

from harness.fuzz.certs import CertCase, cert_cases, check_reference_client
from harness.fuzz.differential import DifferentialResult, judge
from harness.fuzz.server import ServerInput
from harness.fuzz.tlsserve import CertServer, UnservableError
from harness.model import CnFallback
from harness.pki import Lab
from harness.pki.lab import write_private, write_public

logger = logging.getLogger(__name__)

SCHEMA = 1


def _name(target: str, label: str, content: str) -> str:
    digest = hashlib.sha256(content.encode()).hexdigest()[:12]
    return f"{target}-{label}-{digest}.json"


def save(directory: Path, finding: dict[str, Any]) -> Path:
    """Write ``finding`` under ``directory``; the name derives from its content."""
    text = json.dumps(finding, indent=2, sort_keys=True, ensure_ascii=True) + "\n"
    path = directory / _name(finding["target"], finding.get("label", "input"), text)
    if "key_pem" in finding:
        write_private(path, text.encode())
    else:
        write_public(path, text.encode())
    return path


def load(path: Path) -> dict[str, Any]:
    """Read one finding file.

    Raises:
        ValueError: not a finding of a known schema and target.
    """
    value = json.loads(path.read_text())
    if not isinstance(value, dict) or value.get("schema") != SCHEMA:
        raise ValueError(f"{path} is not a schema {SCHEMA} finding")
    if value.get("target") not in ("server", "client", "differential"):
        raise ValueError(f"{path}: unknown target {value.get('target')!r}")
    return value


def server_finding(item: ServerInput | None, problem: str) -> dict[str, Any]:
    """Return the JSON of a server finding."""
    return {
        "schema": SCHEMA,
        "target": "server",
        "label": item.kind if item else "campaign",
        "problem": problem,
        "input": item.to_json() if item else None,
    }


def _case_json(case: CertCase, lab: Lab) -> dict[str, Any]:
    return {
        "family": case.family,
        "label": case.label,
        "reference": case.reference,
        "chain_pem": case.chain_pem,
        "key_pem": case.key_pem.decode(),
        "trust_store_pem": lab.trust_store_path.read_text(),
        "built_at": lab.built_at.isoformat(),
        "valid": case.valid,
        "identity_ok": case.identity_ok,
        "rule": case.rule,
        "spec": repr(case.spec) if case.spec is not None else None,
    }


def differential_finding(result: DifferentialResult, lab: Lab) -> dict[str, Any]:
    """Return the JSON of a differential disagreement."""
    return {
        "schema": SCHEMA,
        "target": "differential",
        **_case_json(result.case, lab),
        "verdicts": [
            {
                "stack": v.stack,
                "accepted": v.accepted,
                "expected": v.expected,
                "detail": v.detail,
            }
            for v in result.verdicts
        ],
    }


def _case_from_json(value: dict[str, Any]) -> CertCase:
    pems = value["chain_pem"].encode()
    blocks = pems.split(b"-----END CERTIFICATE-----")
    ders = []
    for block in blocks:
        body = block.split(b"-----BEGIN CERTIFICATE-----")[-1].strip()
        if body:
            ders.append(base64.b64decode(b"".join(body.split())))
    return CertCase(
        value["family"],
        value["label"],
        tuple(ders),
        value["key_pem"].encode(),
        value["reference"],
        spec=None,
        valid=value.get("valid"),
        identity_ok=value.get("identity_ok"),
        rule=value.get("rule", ""),
    )


def replay(value: dict[str, Any], workdir: Path, lab: Lab | None = None) -> list[str]:
    """Run a finding again; return how the current code differs from it.

    A server finding must no longer break any property (it is fixed when
    this returns nothing). A certificate finding must reproduce: every
    stack's verdict must equal the saved one.
    """
    if value["target"] == "server":
        from harness.fuzz.server import replay_server_input

        assert lab is not None, "server replays need a lab"
        if value["input"] is None:
            return []
        return replay_server_input(lab, ServerInput.from_json(value["input"]))

    store = workdir / "trust-store.pem"
    store.write_text(value["trust_store_pem"])
    case = _case_from_json(value)
    built_at = dt.datetime.fromisoformat(value["built_at"])
    if value["target"] == "client":
        with CertServer(case.chain_der, case.key_pem) as server:
            check = check_reference_client(
                case, store, built_at, server.host, server.port
            )
        problems = list(check.problems)
        expected = value.get("expected_reasons")
        if expected is not None and sorted(check.reasons) != expected:
            problems.append(f"reasons {sorted(check.reasons)}, oracle {expected}")
        return problems
    result = judge(case, store, built_at)
    saved = {v["stack"]: v["accepted"] for v in value["verdicts"]}
    now = {v.stack: v.accepted for v in result.verdicts}
    return [
        f"{stack}: saved verdict {saved[stack]}, now {now.get(stack)}"
        for stack in saved
        if saved[stack] is not None and now.get(stack) != saved[stack]
    ]


def run_certificate_campaign(
    lab: Lab,
    target: str,
    *,
    max_inputs: int,
    budget: float,
    seed: int = 0,
    out: Path | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Run a bounded client or differential campaign; save findings to ``out``.

    A differential finding is saved once per input shape and verdict
    pattern, so a campaign does not write the same disagreement a thousand
    times.

    Returns:
        Counts: inputs tried, unservable inputs, findings and saved files.
    """
    import time

    deadline = time.monotonic() + budget
    summary: dict[str, Any] = {
        "target": target,
        "inputs": 0,
        "unservable": 0,
        "findings": 0,
        "saved": [],
    }
    seen: set[str] = set()

    @settings(
        max_examples=max_inputs,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=cert_cases(lab))
    def one(case: CertCase) -> None:
        if time.monotonic() > deadline or summary["inputs"] >= max_inputs:
            return
        summary["inputs"] += 1
        try:
            finding = _one_certificate(case, lab, target, seen)
        except UnservableError:
            summary["unservable"] += 1
            return
        if finding is not None:
            summary["findings"] += 1
            if out is not None:
                summary["saved"].append(str(save(out, finding)))
        if progress is not None:
            progress(summary["inputs"], summary["findings"])

    hypothesis_seed(seed)(one)()
    return summary


def _oracle_reasons(case: CertCase, lab: Lab) -> list[str] | None:
    reasons = case.expected(CnFallback.WHEN_NO_SAN, lab.built_at).reasons
    return None if reasons is None else sorted(r.value for r in reasons)


def _one_certificate(
    case: CertCase, lab: Lab, target: str, seen: set[str]
) -> dict[str, Any] | None:
    if target == "client":
        with CertServer(case.chain_der, case.key_pem) as server:
            check = check_reference_client(
                case, lab.trust_store_path, lab.built_at, server.host, server.port
            )
        if not check.problems:
            return None
        return {
            "schema": SCHEMA,
            "target": "client",
            **_case_json(case, lab),
            "problems": list(check.problems),
            "expected_reasons": _oracle_reasons(case, lab),
            "verdict": check.verdict,
            "reasons": list(check.reasons),
        }
    result = judge(case, lab.trust_store_path, lab.built_at)
    if not result.disagreement or result.signature() in seen:
        return None
    seen.add(result.signature())
    return differential_finding(result, lab)
