"""Oversubscription under load: how many calls each limit admits when many more arrive at once.

Runs the gateway as deployed (gunicorn, config/gunicorn.conf.py) in two set-ups:
  sqlite:  one gateway, 4 workers, a SQLite file, database-held slots;
  shared:  two gateways (2 workers each) on different ports, one PostgreSQL, one Redis;
and for each, `--trials` rounds of: quota Q with 8Q concurrent calls, balance B with 4B calls,
concurrency C with 3C slow calls. Prints admitted vs limit per round; any excess is
oversubscription. Needs PostgreSQL and redis-server installed (`make test` installs them).

    .venv/bin/python bench/oversubscription.py [--trials 3] [--quota 25]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cryptography.fernet import Fernet  # noqa: E402

from stub_upstream import StubServer  # noqa: E402
from tests.served import ServedGateway, fire_at_once  # noqa: E402
from tests.servers import PostgresServer, RedisServer  # noqa: E402


def run_rounds(label: str, gateways: list[ServedGateway], args) -> list[tuple]:
    bases = [g.base for g in gateways]
    admin = gateways[0]
    rows = []
    for trial in range(args.trials):
        cases = (
            ("quota", args.quota, 8 * args.quota, ["--daily-quota", str(args.quota)], None, "4013"),
            ("balance", args.quota, 4 * args.quota, ["--balance", str(args.quota)], None, "4016"),
            ("concurrency", 4, 12, ["--concurrency", "4"], "stub-slow", "4008"),
        )
        for name, limit, calls, options, model, refusal in cases:
            account = admin.flask_json("accounts", "create", f"{name}-{trial}", *options)
            started = time.perf_counter()
            codes = fire_at_once(bases, account, calls, model=model)
            elapsed = time.perf_counter() - started
            admitted = codes.get("0000", 0)
            other = {c: n for c, n in codes.items() if c not in ("0000", refusal)}
            rows.append((label, trial, name, limit, calls, admitted, codes.get(refusal, 0), other))
            print(
                f"{label:7} round {trial}  {name:11} limit {limit:3}  calls {calls:4}  "
                f"admitted {admitted:3}  refused {codes.get(refusal, 0):4}  other {other or '-'}"
                f"  ({elapsed:.1f} s)",
                flush=True,
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--quota", type=int, default=25)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="oversubscription-"))
    stub = StubServer(slow_seconds=2.0).start()
    common = {
        "OPENAI_BASE_URL": stub.base_url,
        "OPENAI_API_KEY": "sk-bench",
        "UPSTREAM_TIMEOUT_SECONDS": "20",
        "UPSTREAM_MAX_RETRIES": "0",
        "ACCOUNT_SEALING_KEY": Fernet.generate_key().decode(),
    }
    rows = []
    single = ServedGateway(
        workdir, workers=4, DATABASE_URL=f"sqlite:///{workdir / 'gateway.sqlite3'}", **common
    ).start()
    try:
        rows += run_rounds("sqlite", [single], args)
    finally:
        single.stop()

    postgres, redis = PostgresServer().start(), RedisServer().start()
    shared_settings = {"DATABASE_URL": postgres.new_database(), "REDIS_URL": redis.url, **common}
    pair = [ServedGateway(workdir, workers=2, **shared_settings) for _ in range(2)]
    try:
        for gateway in pair:
            gateway.start()
        rows += run_rounds("shared", pair, args)
    finally:
        for gateway in pair:
            gateway.stop()
        redis.close()
        postgres.stop()
        stub.stop()

    excess = sum(max(0, admitted - limit) for _, _, _, limit, _, admitted, _, _ in rows)
    short = sum(max(0, limit - admitted) for _, _, _, limit, _, admitted, _, _ in rows)
    print(f"\n{len(rows)} rounds: {excess} calls admitted beyond a limit, {short} below it")
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
