"""Container health check: `python -m pizzeria.chassis.healthcheck [/ready|/health] [SERVICE]`.

Finds the `pizzeria serve SERVICE` process in this container (unless SERVICE is given), asks it
for the path (default `/ready`) on its port, and exits 0 only on a 200, so one image
health-checks any service without being told which one it runs.
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from itertools import pairwise
from pathlib import Path

from pizzeria.chassis.addresses import SERVICE_PORTS, port_for, replica_number
from pizzeria.kit.settings import Settings

#: Addresses a server listens on that a client cannot dial.
WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::", "[::]"})


def served_service(proc: Path = Path("/proc")) -> str | None:
    """The service a `pizzeria serve SERVICE` process here runs, if there is one."""
    for cmdline in sorted(proc.glob("[0-9]*/cmdline")):
        try:
            argv = [part.decode(errors="replace") for part in cmdline.read_bytes().split(b"\0") if part]
        except OSError:  # the process ended while we looked
            continue
        for word, following in pairwise(argv):
            if word == "serve" and following in SERVICE_PORTS:
                return following
    return None


def probe_url(service: str, path: str, settings: Settings) -> str:
    host = "127.0.0.1" if settings.host in WILDCARD_HOSTS else settings.host
    return f"http://{host}:{port_for(service, replica_number())}/{path.lstrip('/')}"


def check(url: str, timeout: float = 3.0) -> tuple[bool, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            return answer.status == 200, f"{url}: {answer.status}"
    except urllib.error.HTTPError as exc:
        return False, f"{url}: {exc.code} {exc.read()[:300].decode(errors='replace')}"
    except (urllib.error.URLError, OSError) as exc:
        return False, f"{url}: {exc}"


def main(argv: Sequence[str] | None = None, proc: Path = Path("/proc")) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    path = args[0] if args else "/ready"
    service = args[1] if len(args) > 1 else served_service(proc)
    if service is None:
        print("healthcheck: no `pizzeria serve SERVICE` process in this container", file=sys.stderr)
        return 1
    healthy, detail = check(probe_url(service, path, Settings()))
    print(f"healthcheck: {detail}", file=sys.stderr if not healthy else sys.stdout)
    return 0 if healthy else 1


if __name__ == "__main__":
    raise SystemExit(main())
