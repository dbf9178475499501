"""`tracer`: operator commands over the Dagster instance (DAGSTER_HOME) and the DuckDB file.

tracer pool                    who holds the duckdb pool's slot, and whether its run still lives
tracer pool --free RUN_ID      mark a dead run failed and free its slot (refused while its process lives)
tracer health                  assets' freshness, the last tick and decision runs, the daemon, failed checks,
                               open positions; exit 0 healthy, 1 unhealthy (each reason printed), 2 config error
tracer forward                 replay a window candle by candle through the strategy decider, the risk manager
                               and the paper broker; trades, PnL, drawdown, buy-and-hold, parity with the backtest
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import warnings
from datetime import UTC, datetime

import dagster as dg

from tracer_assets.pool import FREE_COMMAND, free_slot, holders

HEALTHY, UNHEALTHY, CONFIG_ERROR = 0, 1, 2


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


def health_command(args: argparse.Namespace) -> int:
    from tracer_assets.health import check_health, render_text
    from tracer_assets.redaction import prepare_secrets, redact_text
    from tracer_assets.settings import SettingsError, load_settings
    from tracer_assets.trading.secrets import secrets_to_redact

    # Dagster's notes on beta parameters are for developers, not for a cron job's mail.
    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    warnings.filterwarnings("ignore", category=dg.PreviewWarning)
    try:
        settings = load_settings()
        from tracer_assets.definitions import defs  # builds the code location: a bad setting stops it

        graph = defs.resolve_asset_graph()
        instance = dg.DagsterInstance.get()
    except (SettingsError, ValueError, dg.DagsterError) as error:
        print(f"tracer health: {str(error).strip().splitlines()[0]}", file=sys.stderr)
        return CONFIG_ERROR
    with instance:
        report = check_health(
            instance, graph, settings.duckdb_path, datetime.now(UTC), require_daemon=args.require_daemon
        )
    # Run errors are quoted in the report: no secret of the configuration leaves in them.
    secrets = secrets_to_redact(settings, os.environ)
    deliveries = notify_command(report, secrets) if args.notify else None
    if args.json:
        output = report.to_json()
        if deliveries is not None:
            output["notifications"] = deliveries
        text = json.dumps(output, indent=2)
    else:
        text = render_text(report)
    print(redact_text(text, prepare_secrets(secrets, too_short="skip")))
    return HEALTHY if report.healthy else UNHEALTHY


def notify_command(report, secrets: list[str]) -> list[dict]:
    """--notify: the unhealthy reasons to the configured webhooks; what became of each delivery
    goes to stderr (and into --json). Never raises: a notification never changes the verdict."""
    from tracer_assets import notify
    from tracer_assets.health import notify_unhealthy
    from tracer_assets.resources.notifier import NotifierResource

    if report.healthy:
        return []
    # The notifier logs a failed delivery; here each delivery is reported once, below.
    logger = logging.getLogger(notify.__name__)
    logger.disabled = True
    try:
        resource = NotifierResource.from_env(os.environ).process_config_and_initialize()
        notifier = resource.notifier(secrets=secrets)
        results = notify_unhealthy(report, notifier)
    except Exception as error:  # noqa: BLE001 - the health verdict stands whatever the webhooks do
        print(f"tracer health: --notify: not delivered: {type(error).__name__}", file=sys.stderr)
        return [{"channel": None, "ok": False, "error": f"not delivered: {type(error).__name__}"}]
    finally:
        logger.disabled = False
    if not results:
        print("tracer health: --notify: no webhook is configured (DISCORD_WEBHOOK_URL, TELEGRAM_*)", file=sys.stderr)
    for result in results:  # a failed delivery's error starts with its channel ("discord: ...")
        print(
            f"tracer health: --notify: {f'{result.channel}: delivered' if result.ok else result.error}", file=sys.stderr
        )
    return [{"channel": r.channel, "ok": r.ok, "error": r.error} for r in results]


def forward_command(args: argparse.Namespace) -> int:
    from tracer_assets.settings import SettingsError, load_settings
    from tracer_assets.trading.forward_command import ForwardError, run

    try:
        return run(args, load_settings())
    except (SettingsError, ForwardError) as error:
        print(f"tracer forward: {error}", file=sys.stderr)
        return CONFIG_ERROR


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tracer", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    pool = commands.add_parser("pool", help="who holds the duckdb pool's slot; free a dead run's slot")
    pool.add_argument("--free", metavar="RUN_ID", help="mark this run failed and free its slot")
    pool.add_argument("--force", action="store_true", help="free it even if its process still lives on this machine")
    pool.set_defaults(handler=pool_command)
    health = commands.add_parser(
        "health",
        help="freshness, last runs, daemon, failed checks, open positions; exit 1 when unhealthy",
        description=(
            "Report Tracer's health; exit 0 when healthy, 1 when unhealthy (each reason printed), "
            "2 on a usage or configuration error."
        ),
    )
    health.add_argument("--json", action="store_true", help="one JSON object on stdout, for machines")
    health.add_argument(
        "--notify", action="store_true", help="send the unhealthy reasons to the configured Discord/Telegram webhooks"
    )
    health.add_argument(
        "--require-daemon",
        action="store_true",
        help="no daemon ever having run on this instance is unhealthy too (by default it is only noted)",
    )
    health.set_defaults(handler=health_command)
    forward = commands.add_parser(
        "forward",
        help="forward test: replay candles through the strategy decider, risk manager and paper broker",
        description=(
            "Replay a window of stored candles one at a time through the decision job's strategy decider, risk "
            "manager and paper broker (the kept strategy with the best out-of-sample score per symbol, or "
            "--strategy), print the trades, PnL, drawdown, buy-and-hold and the parity with the backtest engine, "
            "and write the tables as Parquet. Reads the DuckDB file read only. See docs/trading.md."
        ),
    )
    forward.add_argument("--start", help="first candle's open time, ISO UTC (default: 7 days before --end)")
    forward.add_argument("--end", help="end of the window, exclusive, ISO UTC (default: the newest candle)")
    forward.add_argument("--timeframe", help="the candles to trade on (default: the base timeframe)")
    forward.add_argument("--symbols", help="comma-separated symbols (default: TRACER_SYMBOLS)")
    forward.add_argument("--strategy", help="trade this stored strategy (id or name) or built-in, default parameters")
    forward.add_argument(
        "--open-limits",
        action="store_true",
        help="risk limits that never bind and no Kelly sizing, so every trade of the backtest is taken: "
        "the parity of the fill rules alone",
    )
    forward.add_argument(
        "--output-dir", default=".tracer/forward", help="where the result folder goes (default %(default)s)"
    )
    forward.set_defaults(handler=forward_command)
    args = parser.parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
