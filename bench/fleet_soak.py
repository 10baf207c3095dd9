"""The fleet under faults, longer than CI runs it: seeded schedules and the stall experiment.

    python bench/fleet_soak.py                         # 20 schedules of 15 s, then the stall runs
    python bench/fleet_soak.py --seeds 5 --seconds 10  # shorter
    python bench/fleet_soak.py --protocol 3000         # also the protocol's property test, 3000 runs

Real servers (tests/faults/harness.py): gunicorn with two workers and uvicorn, two hosts, one
Redis reached by each through its own proxy, four clients reading and writing.

1. Schedules: for each seed, faults per host (stall, drop, blackhole, reset, delay; 0.1-2 s)
   and sometimes a 0.3 s SIGSTOP of Redis. Counted: reads older than a write the fleet had
   accepted more than max_staleness_seconds (1 s here) before the read began.
2. The stall experiment, the issue's figures: one gunicorn worker, two gunicorn workers, and
   uvicorn, each alone, with and without a 0.3 s SIGSTOP of Redis: reads older than a write
   whose invalidate() had said the fleet has it and every live instance applied it.

Target: zero of both (exit 1 otherwise). The counts and their totals are printed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.faults.harness import (
    Checker,
    Fault,
    FleetUnderTest,
    InstanceSpec,
    Schedule,
    random_schedule,
    run_traffic,
)

STALENESS_SECONDS = 1.0
STALL = Fault(start=1.0, duration=0.3, target="redis", kind="sigstop")


def run(fleet: FleetUnderTest, faults: list[Fault], *, seconds: float, seed: int) -> Checker:
    schedule = Schedule(fleet, faults)
    schedule.start()
    reads, writes = run_traffic(fleet, seconds=seconds, seed=seed)
    schedule.join()
    return Checker(STALENESS_SECONDS, schedule, reads, writes)


def schedules(seeds: int, seconds: float) -> int:
    specs = [InstanceSpec("gunicorn", "gunicorn", workers=2), InstanceSpec("uvicorn", "uvicorn")]
    stale_total = 0
    with tempfile.TemporaryDirectory() as root, FleetUnderTest(
            Path(root), specs, staleness_seconds=STALENESS_SECONDS) as fleet:
        for seed in range(1, seeds + 1):
            faults = random_schedule(seed, list(fleet.instances), seconds=seconds)
            checker = run(fleet, faults, seconds=seconds, seed=seed)
            beyond = len(checker.stale_beyond_the_bound())
            after = len(checker.stale_after_acknowledged())
            stale_total += beyond + after
            kinds = ", ".join(f"{fault.target}:{fault.kind} {fault.duration}s" for fault in faults)
            print(f"seed {seed:2}: {checker.summary()}  [{kinds}]", flush=True)
    print(f"schedules: {seeds} x {seconds:.0f} s, stale reads beyond the bound or after an "
          f"acknowledged write: {stale_total}\n", flush=True)
    return stale_total


def stall_experiment(seconds: float) -> int:
    configs = {"one worker": [InstanceSpec("gunicorn", "gunicorn", workers=1)],
               "two gunicorn workers": [InstanceSpec("gunicorn", "gunicorn", workers=2)],
               "uvicorn": [InstanceSpec("uvicorn", "uvicorn")]}
    stale_total = 0
    for label, specs in configs.items():
        with tempfile.TemporaryDirectory() as root, FleetUnderTest(
                Path(root), specs, staleness_seconds=STALENESS_SECONDS) as fleet:
            for stalled, faults in (("without the stall", []), ("with a 0.3 s stall", [STALL])):
                checker = run(fleet, faults, seconds=seconds, seed=11)
                after = len(checker.stale_after_acknowledged())
                beyond = len(checker.stale_beyond_the_bound())
                stale_total += after + beyond
                print(f"{label:21} {stalled:19}: {checker.summary()}", flush=True)
    print(f"stall experiment: stale reads after invalidate() said the fleet applied it: "
          f"{stale_total}\n", flush=True)
    return stale_total


def protocol(examples: int) -> int:
    env = {**os.environ, "SCALEKIT_PROTOCOL_EXAMPLES": str(examples)}
    print(f"protocol property test, {examples} runs of 40 steps:", flush=True)
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "tests/cache/tiers/test_fleet_protocol.py"], cwd=ROOT, env=env,
                          check=False).returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--protocol", type=int, default=0, metavar="RUNS")
    args = parser.parse_args()
    failed = schedules(args.seeds, args.seconds) > 0
    failed |= stall_experiment(min(args.seconds, 8.0)) > 0
    if args.protocol:
        failed |= protocol(args.protocol) != 0
    print("MISSED: stale reads were served" if failed else "OK: no stale read")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
