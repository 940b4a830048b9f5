"""Devices' domain, without I/O: the twin (desired settings, what a device reports, the
difference), where a device belongs, device keys, commands from sent to acknowledged or
expired, and when a silent device counts as offline."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from pizzeria.kit.errors import Conflict, ValidationFailed
from pizzeria.services.devices.domain import (
    DEFAULT_DESIRED,
    MAX_REPORTED,
    Command,
    CommandHasExpired,
    CommandName,
    CommandStatus,
    DeviceKind,
    Difference,
    Outcome,
    command_parameters,
    desired_settings,
    difference,
    merge_reported,
    new_secret,
    placement,
    secret_digest,
    secret_matches,
    silent,
)

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
OVEN = DeviceKind.OVEN
TRACKER = DeviceKind.TRACKER


def fields(exc: pytest.ExceptionInfo[ValidationFailed]) -> set[str]:
    return {e["field"] for e in exc.value.errors or []}


# -- the twin --------------------------------------------------------------------------------------


def test_a_device_in_step_with_its_desired_settings_shows_no_difference() -> None:
    desired = {"temperature_c": 430, "bake_profile": "neapolitan"}
    assert difference(desired, {**desired, "door": "closed"}) == []


def test_the_difference_names_each_setting_reported_otherwise_or_not_at_all() -> None:
    desired = {"temperature_c": 430, "bake_profile": "neapolitan"}
    assert difference(desired, {"temperature_c": 400}) == [
        Difference("temperature_c", 430, 400),
        Difference("bake_profile", "neapolitan", None),
    ]


def test_a_reported_true_is_not_a_setting_of_one() -> None:
    assert difference({"report_interval_s": 1}, {"report_interval_s": True}) == [
        Difference("report_interval_s", 1, True)
    ]


def test_desired_settings_are_every_setting_of_the_kind_and_nothing_else() -> None:
    assert desired_settings(OVEN, {"bake_profile": "pan", "temperature_c": 250}) == {
        "temperature_c": 250,
        "bake_profile": "pan",
    }
    assert desired_settings(TRACKER, {"report_interval_s": 10}) == {"report_interval_s": 10}
    for kind, settings in DEFAULT_DESIRED.items():
        assert desired_settings(kind, settings) == settings


@pytest.mark.parametrize(
    ("kind", "values", "named"),
    [
        (OVEN, {"temperature_c": 430}, {"bake_profile"}),
        (OVEN, {"temperature_c": 49, "bake_profile": "pan"}, {"temperature_c"}),
        (OVEN, {"temperature_c": 501, "bake_profile": "pan"}, {"temperature_c"}),
        (OVEN, {"temperature_c": 430.0, "bake_profile": "pan"}, {"temperature_c"}),
        (OVEN, {"temperature_c": True, "bake_profile": "pan"}, {"temperature_c"}),
        (OVEN, {"temperature_c": 430, "bake_profile": "burnt"}, {"bake_profile"}),
        (OVEN, {"temperature_c": 430, "bake_profile": "pan", "report_interval_s": 5}, {"report_interval_s"}),
        (TRACKER, {"report_interval_s": 0}, {"report_interval_s"}),
        (TRACKER, {"report_interval_s": 5, "temperature_c": 430}, {"temperature_c"}),
        (TRACKER, {}, {"report_interval_s"}),
    ],
)
def test_wrong_desired_settings_are_refused_naming_each_field(
    kind: DeviceKind, values: dict[str, Any], named: set[str]
) -> None:
    with pytest.raises(ValidationFailed) as refused:
        desired_settings(kind, values)
    assert fields(refused) == named
    assert kind.one in refused.value.detail


def test_a_report_replaces_the_values_it_names_and_a_null_removes_one() -> None:
    before = {"temperature_c": 400, "bake_profile": "pan", "door": "open"}
    after = merge_reported(OVEN, before, {"temperature_c": 430, "door": None, "fan": "on"})
    assert after == {"temperature_c": 430, "bake_profile": "pan", "fan": "on"}
    assert before["door"] == "open", "the state before is left as it was"


@pytest.mark.parametrize(
    ("patch", "named"),
    [
        ({"Temperature": 1}, {"Temperature"}),
        ({"nested": {"a": 1}}, {"nested"}),
        ({"listed": [1, 2]}, {"listed"}),
        ({"note": "x" * 201}, {"note"}),
        ({"note": "a\x00b"}, {"note"}),
        ({"reading": float("nan")}, {"reading"}),
        ({"temperature_c": 900}, {"temperature_c"}),  # a setting is checked as one
        ({"bake_profile": "burnt", "ok": 1}, {"bake_profile"}),
    ],
)
def test_a_report_with_values_a_twin_cannot_hold_is_refused(patch: dict[str, Any], named: set[str]) -> None:
    with pytest.raises(ValidationFailed) as refused:
        merge_reported(OVEN, {}, patch)
    assert fields(refused) == named


def test_a_device_reports_a_bounded_number_of_values() -> None:
    full = {f"value_{n}": n for n in range(MAX_REPORTED)}
    assert merge_reported(TRACKER, {}, full) == full
    with pytest.raises(ValidationFailed):
        merge_reported(TRACKER, full, {"one_more": 1})
    assert len(merge_reported(TRACKER, full, {"value_0": None, "one_more": 1})) == MAX_REPORTED


# -- where a device belongs, and its key ---------------------------------------------------------


def test_an_oven_stands_at_a_station_and_a_tracker_goes_with_a_courier() -> None:
    assert placement(OVEN, "oven-1", None) == ("oven-1", None)
    assert placement(TRACKER, None, "courier-7") == (None, "courier-7")


@pytest.mark.parametrize(
    ("kind", "station", "courier", "named"),
    [
        (OVEN, None, None, {"station"}),
        (OVEN, "Oven 1", None, {"station"}),
        (OVEN, "oven-1", "courier-7", {"courier_id"}),
        (TRACKER, None, None, {"courier_id"}),
        (TRACKER, None, "  ", {"courier_id"}),
        (TRACKER, "oven-1", "courier-7", {"station"}),
    ],
)
def test_a_device_in_the_wrong_place_is_refused(
    kind: DeviceKind, station: str | None, courier: str | None, named: set[str]
) -> None:
    with pytest.raises(ValidationFailed) as refused:
        placement(kind, station, courier)
    assert fields(refused) == named


def test_a_device_key_matches_only_its_own_digest() -> None:
    key, other = new_secret(), new_secret()
    assert key != other
    assert len(key) >= 43
    digest = secret_digest(key)
    assert key not in digest
    assert secret_matches(key, digest)
    assert not secret_matches(other, digest)
    assert not secret_matches("", digest)


# -- commands --------------------------------------------------------------------------------------


def test_an_ovens_commands_and_what_they_carry() -> None:
    desired = DEFAULT_DESIRED[OVEN]
    assert command_parameters(OVEN, CommandName.PREHEAT, None, desired) == {"temperature_c": desired["temperature_c"]}
    assert command_parameters(OVEN, CommandName.PREHEAT, 300, desired) == {"temperature_c": 300}
    assert command_parameters(OVEN, CommandName.SET_TEMPERATURE, 250, desired) == {"temperature_c": 250}
    assert command_parameters(OVEN, CommandName.REBOOT, None, desired) == {}
    assert command_parameters(TRACKER, CommandName.REBOOT, None, DEFAULT_DESIRED[TRACKER]) == {}


@pytest.mark.parametrize(
    ("kind", "command", "temperature", "named"),
    [
        (TRACKER, CommandName.PREHEAT, None, "command"),
        (TRACKER, CommandName.SET_TEMPERATURE, 300, "command"),
        (OVEN, CommandName.SET_TEMPERATURE, None, "temperature_c"),
        (OVEN, CommandName.SET_TEMPERATURE, 1000, "temperature_c"),
        (OVEN, CommandName.PREHEAT, 10, "temperature_c"),
        (OVEN, CommandName.REBOOT, 300, "temperature_c"),
    ],
)
def test_a_command_a_device_cannot_carry_out_is_refused(
    kind: DeviceKind, command: CommandName, temperature: int | None, named: str
) -> None:
    with pytest.raises(ValidationFailed) as refused:
        command_parameters(kind, command, temperature, DEFAULT_DESIRED[kind])
    assert fields(refused) == {named}


def pending(deadline: datetime = NOW + timedelta(seconds=30)) -> Command:
    return Command(CommandStatus.PENDING, deadline)


@pytest.mark.parametrize("outcome", list(Outcome))
def test_an_acknowledgement_in_time_settles_a_command_and_a_repeat_changes_nothing(outcome: Outcome) -> None:
    command = pending()
    assert command.acknowledge(outcome, NOW) is True
    assert command.status == CommandStatus(outcome.value)
    assert command.acknowledge(outcome, NOW + timedelta(hours=1)) is False, "the same answer again"
    assert command.status == CommandStatus(outcome.value)
    assert command.expire(NOW + timedelta(hours=1)) is False, "a settled command does not expire"


def test_a_command_acknowledged_one_way_cannot_be_acknowledged_the_other() -> None:
    command = pending()
    command.acknowledge(Outcome.DONE, NOW)
    with pytest.raises(Conflict, match="done"):
        command.acknowledge(Outcome.REJECTED, NOW)
    assert command.status is CommandStatus.DONE


def test_a_command_expires_at_its_deadline_and_not_before() -> None:
    deadline = NOW + timedelta(seconds=30)
    command = pending(deadline)
    assert not command.overdue(deadline - timedelta(microseconds=1))
    assert command.expire(deadline - timedelta(microseconds=1)) is False
    assert command.status is CommandStatus.PENDING
    assert command.overdue(deadline)
    assert command.expire(deadline) is True
    assert command.status is CommandStatus.EXPIRED
    assert command.expire(deadline + timedelta(seconds=1)) is False, "expired once"


def test_an_acknowledgement_after_the_deadline_is_refused_and_an_expired_command_stays_expired() -> None:
    deadline = NOW + timedelta(seconds=30)
    late = pending(deadline)
    with pytest.raises(CommandHasExpired):
        late.acknowledge(Outcome.DONE, deadline)
    assert late.status is CommandStatus.PENDING, "the caller expires it"
    assert late.expire(deadline)
    for outcome in Outcome:
        with pytest.raises(CommandHasExpired):
            late.acknowledge(outcome, deadline)
    assert late.status is CommandStatus.EXPIRED
    assert CommandHasExpired("x").status == 409


# -- presence --------------------------------------------------------------------------------------


def test_a_device_is_offline_after_a_silence_as_long_as_allowed() -> None:
    allowed = timedelta(seconds=30)
    assert not silent(NOW, NOW, allowed)
    assert not silent(NOW - allowed + timedelta(microseconds=1), NOW, allowed)
    assert silent(NOW - allowed, NOW, allowed)
    assert silent(None, NOW, allowed), "a device never heard from is not online"
