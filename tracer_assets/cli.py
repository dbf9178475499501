"""`tracer`: operator commands over the Dagster instance (DAGSTER_HOME) and the DuckDB file.

tracer pool                    who holds the duckdb pool's slot, and whether its run still lives
tracer pool --free RUN_ID      mark a dead run failed and free its slot (refused while its process lives)
"""

from __future__ import annotations

import argparse
import sys

import dagster as dg

from tracer_assets.pool import FREE_COMMAND, free_slot, holders


def pool_command(args: argparse.Namespace) -> int:
    with dg.DagsterInstance.get() as instance:
        if args.free:
            try:
                print(free_slot(instance, args.free, force=args.force))
            except ValueError as error:
                print(f"tracer pool: {error}", file=sys.stderr)
                return 1
            return 0
        found = holders(instance)
        if not found:
            print("the duckdb pool's slot is free")
            return 0
        for holder in found:
            print(holder.describe())
            if holder.looks_dead:
                print(f"  free it with: {FREE_COMMAND.format(run_id=holder.run_id)}")
        return 1 if any(h.looks_dead for h in found) else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tracer", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    pool = commands.add_parser("pool", help="who holds the duckdb pool's slot; free a dead run's slot")
    pool.add_argument("--free", metavar="RUN_ID", help="mark this run failed and free its slot")
    pool.add_argument("--force", action="store_true", help="free it even if its process still lives on this machine")
    pool.set_defaults(handler=pool_command)
    args = parser.parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
