"""The chaos run, long or short (issue 13), printing its figures and every breach.

    python -m benchmarks.chaos --minutes 30 [--tenants 3] [--seed 13] [--replicas 3]

Without --minutes it plays --invoices stories per tenant (the CI-sized run in
tests/chaos/ does that). Exit status 1 when an invariant broke.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

from tests.chaos.harness import Chaos, Plan
from tests.postgres import drop_made


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=0.0)
    parser.add_argument("--invoices", type=int, default=24, help="per tenant")
    parser.add_argument("--tenants", type=int, default=3)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--every", type=float, default=3.0, help="seconds between acts")
    parser.add_argument("--keep", type=Path, help="keep the run's files here")
    parser.add_argument(
        "--no-broker-restarts",
        action="store_true",
        help="the saboteur leaves Mosquitto running",
    )
    parser.add_argument(
        "--replicas",
        type=int,
        default=1,
        help="syncd processes on one PostgreSQL database (issue 25)",
    )
    args = parser.parse_args()
    plan = Plan(
        tenants=args.tenants,
        invoices=args.invoices,
        minutes=args.minutes,
        seed=args.seed,
        sabotage_every=args.every,
        replicas=args.replicas,
        broker_restarts=not args.no_broker_restarts,
    )
    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.keep or Path(tmp)
        try:
            report = asyncio.run(Chaos(plan, workdir).run())
        finally:
            drop_made()
    print(report.table())
    sys.exit(1 if report.breaches else 0)


if __name__ == "__main__":
    main()
