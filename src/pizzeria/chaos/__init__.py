"""The history checker, reusable wherever a running system is loaded and then held to account
(`pizzeria check`, the fault lab's checked load, the chaos campaign in tests/chaos): a steady
order load that records every request and its answer (`load`), a read-back of everything the
system did (`readback`), and the pure check of the one against the other (`checker`), in the
manner of Jepsen's. `gateway` is a client of a running system through its gateway that serves
both; `run` ties them together for the command line and the fault lab.

It is a client of the public API only: it imports no service (tests/unit/test_architecture.py)."""
