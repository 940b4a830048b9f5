"""Counts the SQLite statements a process runs, by database file, verb and table, for
`bench.profile`: on the path only when that tool starts the system, and idle unless
PZPROFILE_SQL_DIR is set. Every 0.5 s the counts go to <dir>/<pid>.json; while <dir>/pause exists
nothing is counted (so a profile of the service does not include the counting)."""

from __future__ import annotations

import os

if os.environ.get("PZPROFILE_SQL_DIR"):
    import collections
    import json
    import sqlite3
    import threading
    import time
    from collections.abc import Callable
    from typing import Any

    _DIR = os.environ["PZPROFILE_SQL_DIR"]
    _counts: collections.Counter[str] = collections.Counter()
    _paused = [False]
    _connect = sqlite3.connect
    _TABLE_AFTER = {"SELECT": "FROM ", "DELETE": "FROM ", "WITH": "FROM ", "INSERT": "INTO ", "REPLACE": "INTO "}

    def shape(sql: str) -> str:
        """'INSERT outbox', 'SELECT log_records', 'COMMIT', 'PRAGMA data_version' (str.find, no regex:
        this runs once per statement, and the trace gets the SQL with its values)."""
        verb, _, rest = sql[:600].lstrip().partition(" ")
        verb = verb.upper()
        after = _TABLE_AFTER.get(verb)
        if after is not None:
            i = rest.find(after)
            if i < 0:
                i = rest.find(after.lower())
            rest = rest[i + 5 :] if i >= 0 else ""
        table = rest.split(None, 1)[0].strip('"(') if rest.strip() else ""
        return f"{verb} {table}".rstrip()

    def _tracer(database: str) -> Callable[[str], None]:
        def trace(sql: str) -> None:
            if not _paused[0]:
                _counts[f"{database} {shape(sql)}"] += 1

        return trace

    def connect(database: Any, *args: Any, **kwargs: Any) -> Any:
        conn = _connect(database, *args, **kwargs)
        conn.set_trace_callback(_tracer(os.path.basename(str(database))))
        return conn

    def _dump() -> None:
        path, written = os.path.join(_DIR, f"{os.getpid()}.json"), -1
        while True:
            time.sleep(0.5)
            _paused[0] = os.path.exists(os.path.join(_DIR, "pause"))
            counts = dict(_counts)  # a copy: the service thread keeps counting
            total = sum(counts.values())
            if total != written:
                with open(path + ".tmp", "w") as f:
                    json.dump(counts, f)
                os.replace(path + ".tmp", path)
                written = total

    def _start() -> None:
        threading.Thread(target=_dump, name="pzprofile-sql", daemon=True).start()

    def _forked() -> None:
        """A service forked from the zygote: its own counts, and a writer (threads do not
        survive a fork)."""
        _counts.clear()
        _start()

    sqlite3.connect = connect
    os.register_at_fork(after_in_child=_forked)
    _start()
