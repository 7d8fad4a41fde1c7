"""The fault suite: the jobs against real servers that are killed, restarted, made to fail or to hang.

    lab.py        the servers (which a fault may kill), one fresh day per run, jobs run as processes
    catalogue.py  the faults, each at a seeded random point, and one run: fault, heal, rerun at once
    checks.py     the invariants, read from Kafka and Redis and compared with the simulator's oracle
    runner.py     many runs and the table per fault

Command line: `python benchmarks/faults.py` (README, "Fault suite"); tests/test_faults.py runs each
fault once in the normal test suite.
"""
