"""Regression cases from real-world bugs, run against the reference client.

Every case under ``fixtures/regressions/`` is served over real TLS 1.3 by a
mock EMS. Identity and chain cases run once per ``cn_fallback`` mode; scripted
cases run their connection sequence. All cases run in one thread pool, and
each parametrized test checks one case's results.
"""

from __future__ import annotations

import string
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from cryptography import x509
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.endpoint import TrustStore, validate
from harness.model import CnFallback, Reason
from harness.pki import Lab
from harness.regressions import (
    FAMILIES,
    REGRESSIONS_DIR,
    RegressionCase,
    RegressionCaseError,
    check_reference_observation,
    check_step,
    load_case,
    load_cases,
    parse_case,
    run_case_with_reference,
    run_script,
    serve_case,
    serve_certificate,
)

CASES = load_cases()
IDENTITY_CASES = [case for case in CASES if not case.scripted]
SCRIPTED_CASES = [case for case in CASES if case.scripted]


def _reference_problems(case: RegressionCase, lab: Lab, tmp: Path) -> list[str]:
    if case.scripted:
        results = run_script(case, lab, tmp)
        return [
            f"step {index}: {problem}"
            for index, (step, result) in enumerate(
                zip(case.steps, results, strict=True)
            )
            for problem in check_step(step, result)
        ]
    problems = []
    with serve_case(case, lab) as ems:
        for mode in CnFallback:
            observation = run_case_with_reference(case, lab, mode, ems=ems)
            problems += [
                f"{mode.value}: {problem}"
                for problem in check_reference_observation(case, mode, observation)
            ]
    return problems


@pytest.fixture(scope="module")
def reference_problems(
    cert_lab: Lab, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, list[str]]:
    """Run every case against the reference client, in parallel."""
    folders = {case.name: tmp_path_factory.mktemp(case.name) for case in CASES}
    with ThreadPoolExecutor(max_workers=16) as pool:
        futures = {
            case.name: pool.submit(
                _reference_problems, case, cert_lab, folders[case.name]
            )
            for case in CASES
        }
        return {name: future.result() for name, future in futures.items()}


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_reference_client_case(
    case: RegressionCase, reference_problems: dict[str, list[str]]
) -> None:
    assert reference_problems[case.name] == []


# -- the corpus itself ---------------------------------------------------------


def test_every_family_has_cases() -> None:
    families = {case.family for case in CASES}

    assert families == set(FAMILIES)


def test_case_names_are_unique_and_numbered() -> None:
    names = [case.name for case in CASES]

    assert len(names) == len(set(names))
    for case in CASES:
        assert case.name.startswith(f"{case.family:02d}-"), case.name


def test_identity_families_have_both_verdicts() -> None:
    families = {case.family for case in IDENTITY_CASES}
    rejected = {case.family for case in IDENTITY_CASES if any(case.expected.values())}
    accepted = {
        case.family for case in IDENTITY_CASES if not all(case.expected.values())
    }

    # Family 8 is about valid chains only; 13 has no valid control because a
    # name with a NUL byte never matches.
    assert rejected == families - {8}
    assert accepted == families - {13}


def test_scripted_cases_prompt_and_connect() -> None:
    steps = [step for case in SCRIPTED_CASES for step in case.steps]

    assert any(step.expect_prompted for step in steps)
    assert any(not step.expect_prompted and step.expect_connected for step in steps)
    assert any(not step.expect_connected for step in steps)
    assert any(step.restart for step in steps)


# -- the loader ----------------------------------------------------------------

GOOD = """\
family = 1
title = "t"
description = "d"

[input]
reference_identity = "example.com"

[input.leaf]
dns_names = ["*.ample.com"]

[expected]
when-no-san = ["hostname-mismatch"]
never = ["hostname-mismatch"]
always = ["hostname-mismatch"]
"""

SCRIPT = """\
family = 14
title = "t"
description = "d"

[certificates.leaf]
issuer = "self"
chain = []
dns_names = ["ems.example.com"]

[[steps]]
certificate = "leaf"
action = "warn"
answer = "allow"
expect_prompted = true
expect_connected = true

[[steps]]
certificate = "leaf"
action = "warn"
expect_prompted = false
expect_connected = true
"""


def test_parse_good_case() -> None:
    case = parse_case(Path("good.toml"), GOOD)

    assert case.name == "good"
    assert case.kind is None
    assert case.leaf.dns_names == ("*.ample.com",)
    assert case.expected[CnFallback.NEVER] == {Reason.HOSTNAME_MISMATCH}
    assert case.expected_status(CnFallback.ALWAYS) == "rejected"


def test_parse_good_script() -> None:
    case = parse_case(Path("script.toml"), SCRIPT)

    assert case.scripted
    assert [step.expect_prompted for step in case.steps] == [True, False]
    assert case.steps[0].server == "a"
    assert case.steps[0].reference_identity == "ems.example.com"


BAD_CASES = [
    ("not toml", "bad.toml: invalid TOML"),
    (GOOD.replace("family = 1", "family = 16"), r"bad.toml: family: expected 1 to 15"),
    (GOOD.replace("family = 1", 'family = "1"'), r"bad.toml: family: expected int"),
    (GOOD.replace('title = "t"\n', ""), r"bad.toml: title: missing"),
    (GOOD.replace('description = "d"', 'description = " "'), "description: must not"),
    ("colour = 1\n" + GOOD, r"bad.toml: colour: unknown field"),
    (
        GOOD.replace('dns_names = ["*.ample.com"]', 'dns_names = "*.ample.com"'),
        r"bad.toml: input.leaf.dns_names: expected list, got string",
    ),
    (
        GOOD.replace("[input.leaf]", "[input.leaf]\nwindow = [1]"),
        r"bad.toml: input.leaf.window: expected two integers",
    ),
    (
        GOOD.replace("[input.leaf]", '[input.leaf]\nissuer = "nobody"'),
        r"bad.toml: input.leaf: invalid leaf: unknown issuer role 'nobody'",
    ),
    (
        GOOD.replace("[input.leaf]", '[input.leaf]\nsubject = "x"'),
        r"bad.toml: input.leaf.subject: unknown field",
    ),
    (
        GOOD.replace('never = ["hostname-mismatch"]', 'never = ["mismatch"]'),
        r"bad.toml: expected.never: unknown reason 'mismatch'",
    ),
    (
        GOOD.replace('never = ["hostname-mismatch"]\n', ""),
        r"bad.toml: expected.never: missing",
    ),
    (
        GOOD.replace('always = ["hostname-mismatch"]', "always = []"),
        r"bad.toml: expected.always: expected reasons \[\] disagree with the "
        r"oracle, which gives \[hostname-mismatch\]",
    ),
    (
        GOOD.replace('reference_identity = "example.com"', 'kind = "wildcard-tld"'),
        r"bad.toml: input.leaf: unknown field; allowed: kind",
    ),
    (
        GOOD.split("[input]")[0] + '[input]\nkind = "no-such-kind"\n',
        r"bad.toml: input.kind: unknown catalogue kind 'no-such-kind'",
    ),
    (
        GOOD + "[[steps]]\n",
        r"bad.toml: steps: only families 14 and 15 use steps",
    ),
    (
        SCRIPT.replace("expect_prompted = false", "expect_prompted = true"),
        r"bad.toml: steps\[1\].expect_prompted: True disagrees with the oracle",
    ),
    (
        SCRIPT.replace(
            'certificate = "leaf"\naction = "warn"\nexpect',
            'certificate = "x"\naction = "warn"\nexpect',
        ),
        r"bad.toml: steps\[1\].certificate: no certificate named 'x'",
    ),
    (
        SCRIPT.replace('answer = "allow"', 'answer = "maybe"'),
        r"bad.toml: steps\[0\].answer: expected allow or deny",
    ),
    (
        SCRIPT.replace('answer = "allow"\n', ""),
        r"bad.toml: steps\[0\].answer: missing, and the client prompts here",
    ),
    (
        SCRIPT + "expect_app_bytes = false\n",
        r"bad.toml: steps\[1\].expect_app_bytes: must equal expect_connected",
    ),
    (
        SCRIPT.replace("expect_prompted = false", "at = 99\nexpect_prompted = false"),
        r"bad.toml: steps\[1\].at: expected 0 to 30 seconds, got 99",
    ),
]


@pytest.mark.parametrize(("text", "message"), BAD_CASES)
def test_bad_case_is_one_line_error(text: str, message: str) -> None:
    with pytest.raises(RegressionCaseError, match=message) as caught:
        parse_case(Path("bad.toml"), text)

    assert "\n" not in str(caught.value)


def test_load_cases_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(RegressionCaseError, match=r"no \*\.toml regression cases"):
        load_cases(tmp_path)


def test_load_case_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "binary.toml"
    path.write_bytes(b"\xff\xfe")

    with pytest.raises(RegressionCaseError, match=r"binary\.toml: cannot read"):
        load_case(path)


def test_shipped_files_load_in_place() -> None:
    names = sorted(path.stem for path in REGRESSIONS_DIR.glob("*.toml"))

    assert names == [case.name for case in CASES]


# -- clock skew needs a fresh leaf -------------------------------------------------


def test_clock_skew_leaf_is_issued_fresh(cert_lab: Lab) -> None:
    case = next(c for c in CASES if c.name == "09-not-yet-valid-by-a-minute")
    store = TrustStore.load(cert_lab.trust_store_path)

    served = serve_certificate(case, cert_lab)
    chain = _load_chain(served.chain_pem)
    result = validate(chain, store, case.reference_identity, CnFallback.WHEN_NO_SAN)

    assert result.reasons == [Reason.NOT_YET_VALID]


def _load_chain(pem: bytes) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(pem)


# -- generated variants ------------------------------------------------------------

_LABEL = st.text(string.ascii_lowercase + string.digits, min_size=1, max_size=8)


def _case_text(reference: str, dns_name: str, reasons: list[str]) -> str:
    listed = ", ".join(f'"{r}"' for r in reasons)
    return (
        'family = 1\ntitle = "generated"\ndescription = "generated"\n'
        f'[input]\nreference_identity = "{reference}"\n'
        f'[input.leaf]\ndns_names = ["{dns_name}"]\n'
        f"[expected]\nwhen-no-san = [{listed}]\nnever = [{listed}]\n"
        f"always = [{listed}]\n"
    )


@st.composite
def suffix_pairs(draw: st.DrawFn) -> tuple[str, str]:
    """A reference identity and a wildcard whose suffix ends mid-label in it.

    Either the first label of the reference ends with the wildcard's first
    suffix label (``*.ample.com`` for ``example.com``), or a deeper label does
    (``*.example.com`` for ``ems.badexample.com``).
    """
    suffix = draw(st.lists(_LABEL, min_size=2, max_size=3))
    prefix = draw(_LABEL)
    if draw(st.booleans()):
        labels = [prefix + suffix[0], *suffix[1:]]
    else:
        labels = [draw(_LABEL), prefix + suffix[0], *suffix[1:]]
    return ".".join(labels), "*." + ".".join(suffix)


@settings(max_examples=40, deadline=None)
@given(pair=suffix_pairs())
def test_generated_suffix_without_boundary(
    cert_lab: Lab, pair: tuple[str, str]
) -> None:
    reference, pattern = pair
    store = TrustStore.load(cert_lab.trust_store_path)
    # The pair reproduces the bug: a plain string-suffix check accepts it.
    assert reference.endswith(pattern[2:])

    case = parse_case(
        Path("gen.toml"), _case_text(reference, pattern, ["hostname-mismatch"])
    )
    chain = _load_chain(serve_certificate(case, cert_lab).chain_pem)

    for mode in CnFallback:
        result = validate(chain, store, reference, mode)
        assert result.reasons == [Reason.HOSTNAME_MISMATCH], mode


@settings(max_examples=30, deadline=None)
@given(
    parent=st.lists(_LABEL, min_size=2, max_size=3),
    extra=st.lists(_LABEL, min_size=2, max_size=4),
)
def test_generated_wildcard_spans_labels(
    cert_lab: Lab, parent: list[str], extra: list[str]
) -> None:
    reference = ".".join([*extra, *parent])
    pattern = "*." + ".".join(parent)
    store = TrustStore.load(cert_lab.trust_store_path)

    case = parse_case(
        Path("gen.toml"), _case_text(reference, pattern, ["hostname-mismatch"])
    )
    chain = _load_chain(serve_certificate(case, cert_lab).chain_pem)
    result = validate(chain, store, reference, CnFallback.WHEN_NO_SAN)

    assert result.reasons == [Reason.HOSTNAME_MISMATCH]


@settings(max_examples=30, deadline=None)
@given(
    labels=st.lists(_LABEL, min_size=2, max_size=4),
    reference_upper=st.lists(st.booleans(), min_size=40, max_size=40),
    san_upper=st.lists(st.booleans(), min_size=40, max_size=40),
)
def test_generated_case_changes_match(
    cert_lab: Lab,
    labels: list[str],
    reference_upper: list[bool],
    san_upper: list[bool],
) -> None:
    name = ".".join(labels)
    reference = _flip_case(name, reference_upper)
    dns_name = _flip_case(name, san_upper)
    store = TrustStore.load(cert_lab.trust_store_path)

    case = parse_case(Path("gen.toml"), _case_text(reference, dns_name, []))
    chain = _load_chain(serve_certificate(case, cert_lab).chain_pem)
    result = validate(chain, store, reference, CnFallback.WHEN_NO_SAN)

    assert result.reasons == []


def _flip_case(text: str, upper: list[bool]) -> str:
    flags = (upper + [False] * len(text))[: len(text)]
    return "".join(c.upper() if u else c for c, u in zip(text, flags, strict=True))
