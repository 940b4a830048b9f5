"""A PostgreSQL server of its own, for the faults that stop one: the shared test server on 5432
serves every other test and must never go down, so a scenario that stops "the database" gets a
cluster made for it (`initdb` in a temporary directory, on a free port, trust auth on loopback)
from the same PostgreSQL binaries the machine has.

PostgreSQL refuses to run as root: when the tests run as root, the cluster belongs to the
`postgres` account the Debian package created, and its commands run as that account."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.support.tcpproxy import free_port


def _bin_dir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name))
    if not found:
        raise RuntimeError("no PostgreSQL binaries under /usr/lib/postgresql (make services installs them)")
    return Path(found[-1])


class PrivateServer:
    """One PostgreSQL cluster in a directory of its own under the system's temporary directory
    (where the `postgres` account can reach it): `start()`, `crash()` (stopped at once, as a
    power cut would), `start()` again (it recovers from its WAL), `stop()` for good (the
    directory removed)."""

    def __init__(self, *, max_connections: int = 400) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="pizzeria-pg-"))
        self.data = self.directory / "data"
        self.port = free_port()
        self.max_connections = max_connections
        self._bin = _bin_dir()
        self._owner = pwd.getpwnam("postgres") if os.geteuid() == 0 else None

    @property
    def admin_dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *command: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if self._owner is not None else []
        done = subprocess.run([*prefix, *command], capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{Path(command[0]).name} failed ({done.returncode}): {done.stderr or done.stdout}")

    def _init(self) -> None:
        if self._owner is not None:
            shutil.chown(self.directory, self._owner.pw_uid, self._owner.pw_gid)
        self._run(
            str(self._bin / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
            "--encoding=UTF8",
        )
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"port = {self.port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{self.directory}'\n"
                f"max_connections = {self.max_connections}\n"
            )

    def start(self) -> PrivateServer:
        if not (self.data / "PG_VERSION").exists():
            self._init()
        log = str(self.directory / "server.log")
        self._run(str(self._bin / "pg_ctl"), "-D", str(self.data), "-l", log, "-w", "start")
        return self

    def crash(self) -> None:
        """Every backend gone at once, nothing flushed beyond what was committed."""
        self._run(str(self._bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run(str(self._bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")
        shutil.rmtree(self.directory, ignore_errors=True)
