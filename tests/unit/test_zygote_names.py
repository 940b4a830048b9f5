"""The zygote keeps the names of the libraries its scout found (`pizzeria.zygote._preload`) for
as long as the code and the installed libraries stay as they were: a new state of either is a
new list, an old list is pruned, and a kept list spares the next zygote its scout."""

from __future__ import annotations

import gc
import os
import sys
import time
from pathlib import Path

import pytest

from pizzeria import zygote


@pytest.fixture
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    root = tmp_path / "package"
    (root / "services" / "__pycache__").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "services" / "orders.py").write_text("import json\n")
    return root


def test_the_list_is_named_by_the_code_it_was_found_for(package: Path, tmp_path: Path) -> None:
    first = zygote._names_file(package)
    assert first is not None
    assert first.parent == tmp_path / "cache" / "pizzeria" / "zygote"
    assert zygote._names_file(package) == first, "the same code, another list"

    (package / "services" / "__pycache__" / "orders.cpython-311.pyc").write_bytes(b"compiled")
    assert zygote._names_file(package) == first, "bytecode is no part of the code"

    (package / "services" / "orders.py").write_text("import json\nimport decimal\n")
    edited = zygote._names_file(package)
    assert edited not in (None, first), "an edited module kept the old list"

    (package / "services" / "kitchen.py").write_text("")
    added = zygote._names_file(package)
    assert added not in (None, first, edited), "a new module kept the old list"

    os.utime(package / "services" / "kitchen.py", ns=(1, 1))
    assert zygote._names_file(package) not in (first, edited, added), "a module's time is part of its state"


def test_a_kept_list_reads_back_whole_and_old_lists_of_other_code_go(package: Path) -> None:
    path = zygote._names_file(package)
    assert path is not None
    assert zygote._read_names(path) is None, "nothing kept yet"
    path.parent.mkdir(parents=True)
    old = path.with_name("libraries-old.txt")
    recent = path.with_name("libraries-recent.txt")
    for other in (old, recent):
        other.write_text("json")
    two_days_ago = time.time() - 2 * 86400
    os.utime(old, (two_days_ago, two_days_ago))

    zygote._keep_names(path, ["json", "decimal", "json.decoder"])

    assert zygote._read_names(path) == ["json", "decimal", "json.decoder"]
    assert not old.exists(), "a list of code two days gone was kept"
    assert recent.exists(), "another checkout's list of today was pruned"
    assert sorted(p.name for p in path.parent.iterdir()) == sorted([path.name, recent.name]), "a partial file left"


def test_a_zygote_with_a_kept_list_imports_it_without_a_scout(package: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = zygote._names_file()
    assert path is not None  # the real package's list, under the test's own cache
    wanted = "colorsys"  # in the standard library, and imported by nothing of the system
    monkeypatch.delitem(sys.modules, wanted, raising=False)
    zygote._keep_names(path, [wanted, "no_such_library_anywhere"])

    def no_scout() -> list[str]:
        raise AssertionError("a scout was sent although the list was kept")

    monkeypatch.setattr(zygote, "_scout", no_scout)
    try:
        zygote._preload()
    finally:
        gc.unfreeze()
    assert wanted in sys.modules, "the kept list was not imported"


def test_an_empty_list_is_no_list(package: Path) -> None:
    path = zygote._names_file(package)
    assert path is not None
    path.parent.mkdir(parents=True)
    path.write_text("\n")
    assert zygote._read_names(path) is None, "an empty list would have the zygote import nothing"


def test_without_a_list_the_scout_goes_once_and_its_list_serves_the_next_zygote(
    package: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wanted = "colorsys"
    monkeypatch.delitem(sys.modules, wanted, raising=False)
    scouted: list[int] = []

    def scout() -> list[str]:
        scouted.append(1)
        return [wanted]

    monkeypatch.setattr(zygote, "_scout", scout)
    try:
        zygote._preload()
        assert scouted == [1]
        assert zygote._read_names(zygote._names_file()) == [wanted], "the scout's list was not kept"
        zygote._preload()
    finally:
        gc.unfreeze()
    assert scouted == [1], "the second zygote sent a scout although the list was kept"
    assert wanted in sys.modules


def test_with_nowhere_to_keep_the_list_the_zygote_still_starts_and_scouts_each_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker / "cache"))  # under a file: cannot be made
    scouted: list[int] = []

    def scout() -> list[str]:
        scouted.append(1)
        return ["json"]

    monkeypatch.setattr(zygote, "_scout", scout)
    try:
        zygote._preload()
        zygote._preload()
    finally:
        gc.unfreeze()
    assert scouted == [1, 1]
    assert not list(tmp_path.glob("**/libraries-*")), "a list was left somewhere"


def test_a_relative_cache_home_is_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")
    path = zygote._names_file()
    assert path is not None
    assert path.parent == Path.home() / ".cache" / "pizzeria" / "zygote"
