"""Devices, their twins and the commands sent to them. No I/O.

A device's twin holds two sets of settings: the desired ones staff set (an oven's temperature
and bake profile, a tracker's report interval) and the ones the device last reported it runs
with; where they differ the device has not caught up yet (or cannot). A command asks a device
to act now; it waits for the device's acknowledgement until its deadline and expires after it.
A device is online while it keeps reporting, and offline after a silence longer than allowed.
"""

from __future__ import annotations

import enum
import math
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pizzeria.kit.auth import device_key_digest, device_key_matches
from pizzeria.kit.errors import Conflict, ValidationFailed

Scalar = str | int | float | bool | None


class DeviceKind(enum.StrEnum):
    OVEN = "oven"
    TRACKER = "tracker"

    @property
    def one(self) -> str:
        """The kind with its article, for messages: "an oven", "a tracker"."""
        return "an oven" if self is DeviceKind.OVEN else "a tracker"


class BakeProfile(enum.StrEnum):
    NEAPOLITAN = "neapolitan"
    ROMAN = "roman"
    PAN = "pan"
    KEEP_WARM = "keep_warm"


class CommandName(enum.StrEnum):
    PREHEAT = "preheat"
    SET_TEMPERATURE = "set_temperature"
    REBOOT = "reboot"


class CommandStatus(enum.StrEnum):
    PENDING = "pending"  # sent, no answer yet
    DONE = "done"  # acknowledged: carried out
    REJECTED = "rejected"  # acknowledged: refused by the device
    EXPIRED = "expired"  # no answer before the deadline


class Outcome(enum.StrEnum):
    """What a device answers to a command."""

    DONE = "done"
    REJECTED = "rejected"


# -- settings ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    """One setting of a kind of device: a whole number within a range, or one of some words."""

    name: str
    minimum: int | None = None
    maximum: int | None = None
    choices: tuple[str, ...] = ()

    def problem(self, value: Any) -> str | None:
        """Why `value` cannot be this setting (None: it can)."""
        if self.choices:
            if not isinstance(value, str) or value not in self.choices:
                return f"must be one of {', '.join(self.choices)}"
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            return "must be a whole number"
        if self.minimum is not None and self.maximum is not None and not self.minimum <= value <= self.maximum:
            return f"must be from {self.minimum} to {self.maximum}"
        return None


TEMPERATURE = Setting("temperature_c", minimum=50, maximum=500)
SETTINGS: dict[DeviceKind, tuple[Setting, ...]] = {
    DeviceKind.OVEN: (TEMPERATURE, Setting("bake_profile", choices=tuple(BakeProfile))),
    DeviceKind.TRACKER: (Setting("report_interval_s", minimum=1, maximum=600),),
}
#: What a device is set to run with when it is registered.
DEFAULT_DESIRED: dict[DeviceKind, dict[str, Scalar]] = {
    DeviceKind.OVEN: {"temperature_c": 430, "bake_profile": BakeProfile.NEAPOLITAN.value},
    DeviceKind.TRACKER: {"report_interval_s": 5},
}


def _refuse(problems: list[dict[str, str]], what: str) -> None:
    if problems:
        detail = "; ".join(f"{p['field']}: {p['message']}" for p in problems[:5])
        raise ValidationFailed(f"{what}: {detail}", errors=problems)


def desired_settings(kind: DeviceKind, values: Mapping[str, Any]) -> dict[str, Scalar]:
    """Every setting of `kind`, each valid, and nothing else (422 naming each field otherwise)."""
    known = {s.name: s for s in SETTINGS[kind]}
    problems = [{"field": n, "message": f"{kind.one} has no such setting"} for n in values if n not in known]
    for name, setting in known.items():
        if name not in values:
            problems.append({"field": name, "message": f"{kind.one} needs it"})
        elif (problem := setting.problem(values[name])) is not None:
            problems.append({"field": name, "message": problem})
    _refuse(problems, f"not the settings of {kind.one}")
    return {name: values[name] for name in known}


#: What a device may report: up to this many values, named in lower snake case.
MAX_REPORTED = 32
REPORTED_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
MAX_REPORTED_TEXT = 200


def _reported_problem(value: Any) -> str | None:
    if value is None or isinstance(value, bool | int):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else "must be a finite number"
    if isinstance(value, str):
        if len(value) > MAX_REPORTED_TEXT:
            return f"must be at most {MAX_REPORTED_TEXT} characters"
        return "may not contain the NUL character" if "\x00" in value else None
    return "must be a number, text, true, false or null"


def merge_reported(kind: DeviceKind, current: Mapping[str, Scalar], patch: Mapping[str, Any]) -> dict[str, Scalar]:
    """The reported state after a device's report: its values replace those it names, a null
    removes one. Values are plain (no objects or lists); those that are settings of the kind
    must be valid ones (422 naming each field otherwise)."""
    known = {s.name: s for s in SETTINGS[kind]}
    problems: list[dict[str, str]] = []
    for name, value in patch.items():
        if not REPORTED_NAME.match(name):
            problems.append({"field": name, "message": "names are lower case letters, digits and _ (up to 40)"})
            continue
        problem = _reported_problem(value)
        if problem is None and value is not None and name in known:
            problem = known[name].problem(value)
        if problem is not None:
            problems.append({"field": name, "message": problem})
    _refuse(problems, "the report is not valid")
    merged = {**current, **patch}
    state = {name: value for name, value in merged.items() if value is not None}
    if len(state) > MAX_REPORTED:
        _refuse([{"field": "state", "message": f"a device reports at most {MAX_REPORTED} values"}], "too much")
    return state


# -- the twin ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Difference:
    """A desired setting the device does not report running with (`reported` None: not reported)."""

    setting: str
    desired: Scalar
    reported: Scalar


def _same(one: Scalar, other: Scalar) -> bool:
    # True == 1 in Python: a setting of 1 is not matched by a reported `true`.
    return type(one) is type(other) and one == other


def difference(desired: Mapping[str, Scalar], reported: Mapping[str, Scalar]) -> list[Difference]:
    """Each desired setting the reported state does not match, in the order of the desired."""
    return [
        Difference(name, value, reported.get(name))
        for name, value in desired.items()
        if name not in reported or not _same(value, reported[name])
    ]


# -- where a device belongs ----------------------------------------------------------------------

STATION = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")


def placement(kind: DeviceKind, station: str | None, courier_id: str | None) -> tuple[str | None, str | None]:
    """An oven stands at a kitchen station; a tracker is carried by one courier (their account id)."""
    problems: list[dict[str, str]] = []
    if kind is DeviceKind.OVEN:
        if station is None:
            problems.append({"field": "station", "message": "an oven stands at a kitchen station: name it"})
        elif not STATION.match(station):
            problems.append({"field": "station", "message": "lower case letters, digits and - (up to 40)"})
        if courier_id is not None:
            problems.append({"field": "courier_id", "message": "an oven is not carried by a courier"})
    else:
        if courier_id is None or not courier_id.strip():
            problems.append({"field": "courier_id", "message": "a tracker is carried by a courier: name their account"})
        if station is not None:
            problems.append({"field": "station", "message": "a tracker stands at no station"})
    _refuse(problems, f"where the {kind} belongs")
    return station, courier_id


# -- device credentials --------------------------------------------------------------------------


def new_secret() -> str:
    """A device's secret, issued once at registration (256 random bits)."""
    return secrets.token_urlsafe(32)


#: What is stored of a secret (kit.auth: a plain hash; the secret is random, not a password).
secret_digest = device_key_digest
secret_matches = device_key_matches


# -- commands ------------------------------------------------------------------------------------

COMMANDS: dict[DeviceKind, tuple[CommandName, ...]] = {
    DeviceKind.OVEN: (CommandName.PREHEAT, CommandName.SET_TEMPERATURE, CommandName.REBOOT),
    DeviceKind.TRACKER: (CommandName.REBOOT,),
}
#: The longest a command may wait for its acknowledgement.
MAX_DEADLINE = timedelta(hours=1)


def command_parameters(
    kind: DeviceKind, command: CommandName, temperature_c: int | None, desired: Mapping[str, Scalar]
) -> dict[str, Scalar]:
    """What `command` tells a device of `kind`: preheat to the given temperature (else the
    desired one), set a temperature (which it needs), reboot (nothing)."""
    if command not in COMMANDS[kind]:
        can = ", ".join(COMMANDS[kind])
        raise ValidationFailed(
            f"{kind.one} cannot {command}; it can {can}",
            errors=[{"field": "command", "message": f"one of {can} for {kind.one}"}],
        )
    if command is CommandName.REBOOT:
        if temperature_c is not None:
            raise ValidationFailed(
                "a reboot takes no temperature", errors=[{"field": "temperature_c", "message": "leave it out"}]
            )
        return {}
    if temperature_c is None:
        if command is CommandName.SET_TEMPERATURE:
            raise ValidationFailed(
                "set_temperature needs temperature_c", errors=[{"field": "temperature_c", "message": "name it"}]
            )
        temperature_c = int(desired[TEMPERATURE.name])  # type: ignore[arg-type]
    problem = TEMPERATURE.problem(temperature_c)
    if problem is not None:
        raise ValidationFailed(f"temperature_c {problem}", errors=[{"field": "temperature_c", "message": problem}])
    return {TEMPERATURE.name: temperature_c}


class CommandHasExpired(Conflict):
    type_slug = "command-expired"
    title = "Command expired"


@dataclass
class Command:
    """A command's life: pending until the device acknowledges it (done or rejected) or its
    deadline passes (expired). An acknowledgement sent again is answered as the first was."""

    status: CommandStatus
    deadline: datetime

    def overdue(self, now: datetime) -> bool:
        """Pending past its deadline: it expires now."""
        return self.status is CommandStatus.PENDING and now >= self.deadline

    def acknowledge(self, outcome: Outcome, now: datetime) -> bool:
        """Settle the command with the device's answer; False when it already was, with this
        same answer (a repeat). An answer past the deadline, to an expired command, or unlike
        the one given before is a conflict (call `expire` first when overdue)."""
        settled = CommandStatus(outcome.value)
        if self.status is CommandStatus.PENDING:
            if self.overdue(now):
                raise CommandHasExpired(f"the command's deadline passed at {self.deadline.isoformat()}")
            self.status = settled
            return True
        if self.status is CommandStatus.EXPIRED:
            raise CommandHasExpired(f"the command expired at {self.deadline.isoformat()}; it must not be carried out")
        if self.status is not settled:
            raise Conflict(f"the command was acknowledged as {self.status} already")
        return False

    def expire(self, now: datetime) -> bool:
        """Expire the command if it is overdue (True when it did)."""
        if not self.overdue(now):
            return False
        self.status = CommandStatus.EXPIRED
        return True


# -- presence ------------------------------------------------------------------------------------


def silent(last_seen_at: datetime | None, now: datetime, offline_after: timedelta) -> bool:
    """Nothing came from the device for `offline_after` or longer (or never anything)."""
    return last_seen_at is None or now - last_seen_at >= offline_after
