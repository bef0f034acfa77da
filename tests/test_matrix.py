"""The scenario matrix: sizes, drop reasons, unique ids, filters and files."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from harness import matrix as m
from harness.matrix import MatrixError, Profile, build_matrix, make_filter
from harness.model import Action, CnFallback
from harness.oracle.decision import Remembered
from harness.pki.kinds import CATALOGUE
from harness.versions import MATRIX_VERSIONS, has_feature

FIXTURES = Path(__file__).parent.parent / "fixtures" / "scenarios"


def test_full_size_is_the_product() -> None:
    matrix = build_matrix()

    expected = len(CATALOGUE) * len(MATRIX_VERSIONS) ** 2 * 2 * 3 * 2 * 3
    assert matrix.full_size == expected
    assert len(matrix) + sum(matrix.dropped.values()) == matrix.full_size


def test_every_drop_reason_is_used() -> None:
    matrix = build_matrix()

    for reason in (
        m.DROP_NO_SETTING,
        m.DROP_NOT_PRESENTED,
        m.DROP_LEGACY,
        m.DROP_VALID,
        m.DROP_ALLOW,
        m.DROP_NO_PROMPT_ANSWER,
    ):
        assert matrix.dropped.get(reason, 0) > 0, reason


def test_no_setting_drop_count() -> None:
    matrix = build_matrix()

    legacy_ems = [v for v in MATRIX_VERSIONS if not has_feature(v)]
    per_ems = len(MATRIX_VERSIONS) * 3 * 2 * 3
    assert (
        matrix.dropped[m.DROP_NO_SETTING] == len(CATALOGUE) * len(legacy_ems) * per_ems
    )


def test_ids_unique_and_pytest_readable() -> None:
    ids = [s.id for s in build_matrix().scenarios]

    assert len(ids) == len(set(ids))
    for scenario_id in ids:
        assert re.fullmatch(r"[a-z0-9./-]+", scenario_id), scenario_id


def test_duplicate_id_rejected() -> None:
    scenario = m.MatrixScenario(kind="correct-fqdn", ems_version="7.0.2")

    with pytest.raises(MatrixError, match="duplicate scenario id"):
        m.check_unique_ids([scenario, scenario])


def test_legacy_client_has_one_scenario_per_cell() -> None:
    matrix = build_matrix(make_filter(kinds=["wrong-host"], client_versions=["6.4.6"]))

    assert {s.id for s in matrix.scenarios} == {
        f"wrong-host/ems-{v}-on/client-6.4.6/legacy"
        for v in MATRIX_VERSIONS
        if has_feature(v)
    }
    assert all(s.action is None for s in matrix.scenarios)


def test_vendor_presented_only_in_vendor_row() -> None:
    matrix = build_matrix()

    for scenario in matrix.scenarios:
        if not scenario.use_ssl_cert:
            assert scenario.kind == m.VENDOR_KIND, scenario.id
            assert scenario.presented_kind == m.VENDOR_KIND


def test_toggle_absent_before_feature() -> None:
    matrix = build_matrix(make_filter(ems_versions=["6.4.6", "7.0.1"]))

    assert len(matrix) > 0
    assert all(s.use_ssl_cert is None for s in matrix.scenarios)
    assert all(s.ems_part.count("-") == 1 for s in matrix.scenarios)


def test_invalid_cell_keeps_nine_combinations() -> None:
    matrix = build_matrix(
        make_filter(
            kinds=["wildcard-too-deep"],
            ems_versions=["7.0.2"],
            client_versions=["7.0.2"],
        )
    )

    columns = sorted(s.column for s in matrix.scenarios)
    assert columns == sorted(
        [
            "ems-7.0.2-on/client-7.0.2/allow",
            "ems-7.0.2-on/client-7.0.2/deny/remembered-none",
            "ems-7.0.2-on/client-7.0.2/deny/remembered-this-leaf",
            "ems-7.0.2-on/client-7.0.2/deny/remembered-other-leaf",
            "ems-7.0.2-on/client-7.0.2/warn/remembered-this-leaf",
            "ems-7.0.2-on/client-7.0.2/warn/allow/remembered-none",
            "ems-7.0.2-on/client-7.0.2/warn/deny/remembered-none",
            "ems-7.0.2-on/client-7.0.2/warn/allow/remembered-other-leaf",
            "ems-7.0.2-on/client-7.0.2/warn/deny/remembered-other-leaf",
        ]
    )


def test_valid_kind_has_no_action() -> None:
    matrix = build_matrix(
        make_filter(
            kinds=["correct-fqdn"], ems_versions=["7.2.0"], client_versions=["7.2.0"]
        )
    )

    assert [s.id for s in matrix.scenarios] == [
        "correct-fqdn/ems-7.2.0-on/client-7.2.0/any-action"
    ]


def test_cn_fallback_changes_validity() -> None:
    selection = make_filter(
        kinds=["cn-only-no-san"], ems_versions=["7.2.0"], client_versions=["7.2.0"]
    )

    lenient = build_matrix(selection, cn_fallback=CnFallback.WHEN_NO_SAN)
    strict = build_matrix(selection, cn_fallback=CnFallback.NEVER)

    assert len(lenient) == 1
    assert len(strict) == 9


def test_actions_filter_keeps_legacy() -> None:
    matrix = build_matrix(make_filter(kinds=["wrong-host"], actions=["deny"]))

    actions = {s.action for s in matrix.scenarios}
    assert actions == {Action.DENY, None}


def test_remembered_states_of_deny() -> None:
    matrix = build_matrix(make_filter(kinds=["expired-leaf"], actions=["deny"]))

    remembered = {s.remembered for s in matrix.scenarios if s.action is Action.DENY}
    assert remembered == set(m.REMEMBERED_STATES)
    assert Remembered.THIS_LEAF_FEWER_REASONS not in remembered


def test_unknown_kind_rejected() -> None:
    with pytest.raises(MatrixError, match="unknown kind 'no-such-kind'"):
        make_filter(kinds=["no-such-kind"])


def test_invalid_version_rejected() -> None:
    with pytest.raises(MatrixError, match=r"client version: invalid version 'x\.y'"):
        make_filter(client_versions=["x.y"])


def test_unknown_id_rejected() -> None:
    with pytest.raises(MatrixError, match="is not in the matrix"):
        build_matrix(make_filter(ids=["correct-fqdn/ems-9.9.9"]))


def test_tls_profile_one_per_kind() -> None:
    matrix = build_matrix(profile=Profile.TLS, cn_fallback=CnFallback.NEVER)

    assert len(matrix) == len(CATALOGUE)
    assert matrix.scenarios[0].id.endswith("/tls/cn-never")
    assert matrix.dropped == {}


def test_toml_example_file() -> None:
    selection = m.load_scenario_file(FIXTURES / "upgrade-edge.toml")

    matrix = build_matrix(selection)

    assert len(matrix) > 0
    assert {s.kind for s in matrix.scenarios} <= set(selection.kinds or ())
    assert {s.ems_version for s in matrix.scenarios} == {"6.4.7", "7.0.2"}


def test_json_ids_file_keeps_order() -> None:
    path = FIXTURES / "pinned-ids.json"
    ids = json.loads(path.read_text())["select"]["ids"]

    matrix = build_matrix(m.load_scenario_file(path))

    assert [s.id for s in matrix.scenarios] == ids


def test_scenario_file_unknown_key(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[select]\nkind = ["correct-fqdn"]\n')

    with pytest.raises(MatrixError, match="unknown key 'kind'"):
        m.load_scenario_file(path)


def test_scenario_file_wrong_suffix(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("select: {}\n")

    with pytest.raises(MatrixError, match=r"must end in \.toml or \.json"):
        m.load_scenario_file(path)


def test_scenario_file_missing_select(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{"kinds": []}')

    with pytest.raises(MatrixError, match="top-level 'select' table"):
        m.load_scenario_file(path)


def test_merged_filter_prefers_other() -> None:
    base = make_filter(kinds=["correct-fqdn"], actions=["warn"])
    given = make_filter(kinds=["wrong-host"])

    merged = base.merged(given)

    assert merged.kinds == ("wrong-host",)
    assert merged.actions == (Action.WARN,)


def test_versions_set_dimensions() -> None:
    matrix = build_matrix(
        make_filter(
            kinds=["correct-fqdn"], ems_versions=["6.4.10"], client_versions=["9.9.9"]
        )
    )

    assert [s.id for s in matrix.scenarios] == [
        "correct-fqdn/ems-6.4.10-on/client-9.9.9/any-action"
    ]


def test_unknown_kind_points_to_certs_list() -> None:
    with pytest.raises(MatrixError) as caught:
        make_filter(kinds=["nosuch"])

    message = str(caught.value)
    assert "unknown kind 'nosuch'" in message
    assert "ems-harness certs list" in message
    assert "correct-fqdn" not in message
