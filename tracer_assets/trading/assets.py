"""trading/decisions -> trading/orders -> trading/positions, trading/portfolio: what the
signal sensor's decision job materializes for one signals/signals materialization.

Exactly once: a decision's id derives from (signal event, symbol), the event being the signals
run's id and its storage id, and an order's client id from (decision id, side); a re-run of the
same signal event reuses the decisions already recorded (no second LLM call) and the brokers
return the order already placed under that client id instead of placing another. Every
committed decision and order reaches the audit files exactly once (`write_audit`).
"""

from dataclasses import asdict, fields
from datetime import UTC, datetime
from decimal import Decimal

import dagster as dg
import polars as pl

from tracer_assets.features.keys import INDICATORS_KEY, INDICATORS_TABLE
from tracer_assets.market.keys import CANDLES_KEY
from tracer_assets.metadata import markdown_table
from tracer_assets.money import decimal_or_none
from tracer_assets.notify import format_order_message
from tracer_assets.policies import DUCKDB_POOL
from tracer_assets.research.keys import BACKTESTS_KEY, BACKTESTS_TABLE
from tracer_assets.resources.exchange import ExchangeResource, LiveExchangeResource
from tracer_assets.resources.notifier import NotifierResource
from tracer_assets.resources.warehouse import TracerDuckDB, table_exists, transaction
from tracer_assets.settings import Settings
from tracer_assets.signals.keys import HISTORY_KEY as SIGNAL_HISTORY_KEY
from tracer_assets.signals.keys import HISTORY_TABLE, SIGNALS_KEY
from tracer_assets.trading import audit as audit_files
from tracer_assets.trading.decide import (
    Decision,
    SignalEvent,
    decision_id,
    exact_confidence,
    kelly_inputs,
    macro_selection,
    order_request,
    payoff_ratio,
    rules_decision,
    signal_valid_until,
    stale_at_execution,
    stale_reason,
)
from tracer_assets.trading.keys import DECISIONS_KEY, ORDERS_KEY, PORTFOLIO_KEY, POSITIONS_KEY, SIGNAL_STORAGE_TAG
from tracer_assets.trading.live import live_allowed
from tracer_assets.trading.live_execution import live_execution
from tracer_assets.trading.llm_decision import PortfolioState, context_from_frames, decide_with_llm
from tracer_assets.trading.orders import Action, Mode, OrderTicket, client_order_id
from tracer_assets.trading.paper import PaperBroker
from tracer_assets.trading.positions import Position
from tracer_assets.trading.risk import MarketRules, RiskLimits, RiskState, assess, capped
from tracer_assets.trading.secrets import API_KEY_VAR, SECRET_VAR, secrets_to_redact
from tracer_assets.trading.signal_checks import unpassed_blocking_checks
from tracer_assets.trading.state import dump_broker, load_broker
from tracer_assets.trading.tables import (
    QUOTE,
    create_trading_tables,
    insert_rows,
    order_row,
    portfolio_row,
    stored_decisions,
)

# Replay has no exchange filters: amounts to 1e-8, prices to 1e-8, and Binance's 5 USDT
# minimum notional, so a paper order on replay is never one a real exchange would refuse.
REPLAY_MARKET = dict(
    amount_step=Decimal("1e-8"), price_tick=Decimal("1e-8"), min_amount=None, max_amount=None, min_cost=Decimal(5)
)


def signal_event(context) -> SignalEvent:
    """The signals materialization this run answers: the sensor's tag, else (a run launched by
    hand) the newest one."""
    tag = context.run.tags.get(SIGNAL_STORAGE_TAG)
    records_filter = dg.AssetRecordsFilter(asset_key=SIGNALS_KEY, storage_ids=[int(tag)] if tag else None)
    records = context.instance.fetch_materializations(records_filter, limit=1).records
    if not records:
        what = f"materialization {tag} of signals/signals" if tag else "any materialization of signals/signals"
        raise dg.Failure(f"no {what}: materialize the signals first (the trading tick does)")
    return SignalEvent(records[0].storage_id, records[0].run_id)


def backtest_stats(connection) -> dict[tuple[str, str], dict]:
    """Per (symbol, timeframe): the out-of-sample stats of the best-scoring active strategy,
    in the macro orchestrator's terms (totalPNL, winRate, trades, drawdown), and its payoff
    ratio (average win / average loss, from the profit factor) for Kelly sizing."""
    if not table_exists(connection, BACKTESTS_TABLE):
        return {}
    columns = {
        row[0]
        for row in connection.execute(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = 'research' AND table_name = 'backtests'"
        ).fetchall()
    }
    profit_factor = "profit_factor" if "profit_factor" in columns else "NULL"
    rows = connection.sql(
        f"""SELECT symbol, timeframe, pnl, win_rate, trades, max_drawdown, strategy_id, {profit_factor}
            FROM {BACKTESTS_TABLE} WHERE "window" = 'out_of_sample'
            QUALIFY row_number() OVER (PARTITION BY symbol, timeframe ORDER BY score DESC NULLS LAST) = 1"""
    ).fetchall()
    return {
        (symbol, timeframe): {
            "totalPNL": pnl,
            "winRate": win_rate,
            "trades": trades,
            "drawdown": drawdown,
            "strategy_id": sid,
            "payoff": payoff_ratio(win_rate, pf),
        }
        for symbol, timeframe, pnl, win_rate, trades, drawdown, sid, pf in rows
    }


def _rows_by_symbol_timeframe(frame: pl.DataFrame) -> dict[tuple[str, str], dict]:
    return {(row["symbol"], row["timeframe"]): row for row in frame.iter_rows(named=True)}


def build_trading_assets(settings: Settings, signal_checks: tuple[str, ...] = ()) -> list[dg.AssetsDefinition]:
    """`signal_checks`: the blocking checks of signals/signals; a signal event whose run did not
    pass every one of them is answered with HOLD for every symbol."""
    timeframes = (settings.base_timeframe, *settings.timeframes)
    mode, mode_reason = trading_mode(settings)
    config_hash = audit_files.config_hash(audit_files.trading_config(settings))

    def decide(context, duckdb: TracerDuckDB, exchange: ExchangeResource, llm) -> dg.MaterializeResult:
        event = signal_event(context)
        audit = audit_files.AuditLog(settings.log_dir, secrets=secrets_to_redact(settings))
        with duckdb.get_connection() as connection:
            create_trading_tables(connection)
            done = stored_decisions(connection, event, settings.symbols)
        if not done.is_empty():
            context.log.info(f"signal event {event.storage_id} was decided already: {done.height} decisions reused")
            write_audit(duckdb, audit)  # what a killed run committed and did not log yet
            return dg.MaterializeResult(
                metadata={"signal_storage_id": event.storage_id, "reused": True, "decisions": done.height}
            )
        with duckdb.get_connection() as connection:
            signals = connection.sql(f"SELECT * FROM {HISTORY_TABLE} WHERE run_id = ?", params=[event.run_id]).pl()
            if signals.is_empty():
                raise dg.Failure(
                    f"signals.signal_history has no rows of run {event.run_id} (signal event {event.storage_id})"
                )
            newest = signals["ts"].max()
            indicators = connection.sql(
                f"SELECT * FROM {INDICATORS_TABLE} "
                "WHERE ts > ?::TIMESTAMPTZ - INTERVAL 30 DAY AND ts <= ?::TIMESTAMPTZ",
                params=[newest, newest],
            ).pl()
            stats = backtest_stats(connection)
            held, free_quote = _holdings(connection, settings, mode)
            bought_on = dict(
                connection.execute(
                    """SELECT o.client_order_id, d.timeframe FROM trading.orders o
                   JOIN trading.decisions d USING (decision_id) WHERE o.side = 'buy'"""
                ).fetchall()
            )
        doubts = unpassed_blocking_checks(context.instance, SIGNALS_KEY, event.run_id, signal_checks)
        # The timeframe a position was bought on ("" if unknown): its label decides the exit.
        held_timeframes = {symbol: bought_on.get(p.position_id) or "" for symbol, p in held.items()}
        newest_indicators = indicators.sort("ts").group_by("symbol", "timeframe").last()
        by_symbol_tf = _rows_by_symbol_timeframe(newest_indicators)
        now = exchange.now(ask_exchange=mode is Mode.LIVE)  # a signal's age is measured on the exchange's clock
        decided_at = datetime.now(UTC)
        rows, decided = [], []
        for symbol in settings.symbols:
            mine = signals.filter(pl.col("symbol") == symbol)
            signals_tf = {row["timeframe"]: row for row in mine.iter_rows(named=True)}
            indicators_tf = {tf: by_symbol_tf[(symbol, tf)] for tf in timeframes if (symbol, tf) in by_symbol_tf}
            prices = {tf: decimal_or_none(row["close"]) for tf, row in indicators_tf.items()}
            valid_until = signal_valid_until(signals_tf.values(), settings.max_signal_age_seconds)
            selection = macro_selection(
                symbol,
                signals_tf,
                {tf: stats[(symbol, tf)] for tf in timeframes if (symbol, tf) in stats},
                timeframes,
                settings.macro_min_win_rate,
            )
            decision = rules_decision(
                selection,
                signals_tf,
                indicators_tf,
                prices,
                held_timeframes.get(symbol),
                settings.base_timeframe,
                settings.tb_min_signal_quality,
                settings.tb_min_conviction_score,
            )
            source = "rules"
            if doubts:  # the signals' own guards did not pass: nothing they say is acted on
                decision = Decision(symbol, None, Action.HOLD, 0.0, "signals/signals not trusted: " + "; ".join(doubts))
            elif valid_until is None or now > valid_until:  # never traded, whatever the deciders would say
                decision = Decision(
                    symbol,
                    None,
                    Action.HOLD,
                    0.0,
                    stale_reason(signals_tf.values(), valid_until, now, settings.max_signal_age_seconds),
                )
            elif llm is not None and (selection.timeframe is not None or symbol in held):
                decision, source = (
                    _ask_llm(llm, symbol, selection, indicators, signals, held, free_quote, settings),
                    "llm",
                )
            signal_ts = signals_tf.get(decision.timeframe or settings.base_timeframe, {}).get("ts", newest)
            rows.append(
                {
                    "decision_id": decision_id(event, symbol),
                    "signal_storage_id": event.storage_id,
                    "signal_run_id": event.run_id,
                    "run_id": context.run.run_id,
                    "ts": signal_ts,
                    "decided_at": decided_at,
                    "symbol": symbol,
                    "timeframe": decision.timeframe,
                    "action": decision.action,
                    "confidence": exact_confidence(decision.confidence),
                    "source": source,
                    "reason": decision.reason,
                    "mode": mode,
                    "price": decision.price,
                    "stop_loss": decision.stop_loss,
                    "take_profit": decision.take_profit,
                    "size_quote": decision.size_quote if decision.size_quote is not None else settings.order_amount,
                    "config_hash": config_hash,
                    "valid_until": valid_until,
                    # The selected strategy's out-of-sample edge, for Kelly sizing of a buy.
                    **kelly_inputs(stats.get((symbol, decision.timeframe)) if decision.action is Action.BUY else None),
                }
            )
            decided.append(decision)
        with duckdb.get_connection() as connection:
            with transaction(connection):
                insert_rows(connection, "trading.decisions", rows)
        write_audit(duckdb, audit)
        actions = {a.value: sum(d.action == a for d in decided) for a in Action}
        table = pl.DataFrame(
            [
                {"symbol": d.symbol, "timeframe": d.timeframe or "-", "action": d.action, "reason": d.reason}
                for d in decided
            ]
        )
        return dg.MaterializeResult(
            metadata={
                "signal_storage_id": event.storage_id,
                "signal_run_id": event.run_id,
                "mode": mode.value,
                "decider": settings.decider,
                **actions,
                "decisions": dg.MetadataValue.md(markdown_table(table)),
            }
        )

    common = dict(
        key=DECISIONS_KEY,
        deps=[SIGNALS_KEY, SIGNAL_HISTORY_KEY, INDICATORS_KEY, BACKTESTS_KEY],
        description=(
            "One decision per symbol for each new signals/signals materialization: the macro selection over "
            "the timeframes (Bull backtest regime + strong_bull ensemble, highest total PnL), then the rules "
            "or the LLM decider (TRACER_DECIDER); HOLD with the reason whenever in doubt. Append-only. Also "
            "reads what is held, from the trading group's own tables as the previous execution left them "
            "(trading.orders, trading.positions, trading.portfolio, trading.paper_state): a feedback loop, "
            "not drawn as edges, which would be a cycle."
        ),
        pool=DUCKDB_POOL,
        group_name="trading",
        kinds={"duckdb"},
    )
    if settings.decider == "llm":
        from tracer_assets.llm.resource import AnthropicResource

        @dg.asset(**common)
        def decisions(
            context: dg.AssetExecutionContext, duckdb: TracerDuckDB, exchange: ExchangeResource, llm: AnthropicResource
        ):
            return decide(context, duckdb, exchange, llm)
    else:

        @dg.asset(**common)
        def decisions(context: dg.AssetExecutionContext, duckdb: TracerDuckDB, exchange: ExchangeResource):
            return decide(context, duckdb, exchange, None)

    def execute(context, duckdb: TracerDuckDB, exchange: ExchangeResource, notifier: NotifierResource, live_exchange):
        event = signal_event(context)
        secrets = [*secrets_to_redact(settings), *notifier.secrets()]
        log = audit_files.AuditLog(settings.log_dir, secrets=secrets)
        if mode is Mode.LIVE:
            outcome = live_execution(context, duckdb, live_exchange, settings, event, config_hash)
            write_audit(duckdb, log, event)
            _notify(context, notifier, secrets, outcome.rows)
            yield from _execution_results(
                {
                    "new_orders": len(outcome.rows),
                    "reconciled": outcome.reconciled,
                    "mode": mode.value,
                    "sent": sum(row["exchange_order_id"] is not None for row in outcome.rows),
                    "dagster/row_count": outcome.orders_total,
                },
                {"open": len(outcome.book.open_positions), "dagster/row_count": len(outcome.book.positions)},
                outcome.portfolio,
            )
            return
        if settings.live_flags_on:
            context.log.warning(f"every live flag is on but this run trades on paper: {mode_reason}")
        now = exchange.now()
        with duckdb.get_connection() as connection:
            create_trading_tables(connection)
            broker = _load_paper_broker(connection, settings)
            # Only these orders can change status in this run (older ones are settled).
            open_before = {o.client_order_id for o in broker.orders if o.status == "pending"}
            decisions_now = stored_decisions(connection, event, settings.symbols).filter(
                pl.col("action") != Action.HOLD
            )
            known = {row[0] for row in connection.execute("SELECT client_order_id FROM trading.orders").fetchall()}
            candles = _new_candles(connection, settings, broker, now)
        fills = _feed(broker, candles.filter(pl.col("ts") < now))
        new_rows = []
        for decision in decisions_now.iter_rows(named=True):
            side = Action(decision["action"]).side
            cid = client_order_id(decision["decision_id"], side)
            if cid in known:  # this signal's order exists: never a second one
                continue
            price = decimal_or_none(decision["price"]) or _last_close(broker, decision["symbol"]) or settings.sim_price
            verdict = None
            if price is not None:
                verdict = assess(
                    order_request(decision, side, price),
                    RiskState.from_history(broker.position_history, now, broker.available(QUOTE)),
                    capped(RiskLimits.from_settings(settings), decimal_or_none(decision["size_quote"])),
                    MarketRules(symbol=decision["symbol"], **REPLAY_MARKET),
                )
            row = order_row(cid, decision, event, context.run.run_id, mode, side, now, config_hash, verdict)
            too_old = stale_at_execution(decision, now)
            if too_old:
                row["reason"] = too_old
            elif verdict is not None and verdict.approved:
                ticket = OrderTicket(
                    cid,
                    decision["symbol"],
                    side,
                    verdict.amount,
                    verdict.price,
                    decimal_or_none(decision["stop_loss"]) if side == "buy" else None,
                    decimal_or_none(decision["take_profit"]) if side == "buy" else None,
                    decision["decision_id"],
                    event.storage_id,
                )
                order = broker.submit(ticket, now)
                open_before.add(order.client_order_id)
                row.update(status=order.status, reason=order.reason or verdict.reason)
            new_rows.append(row)
        fills += _feed(broker, candles.filter(pl.col("ts") >= now))
        updates = [broker.order(cid) for cid in sorted(open_before)]
        marks = {s: close for s in settings.symbols if (close := _last_close(broker, s)) is not None}
        portfolio = portfolio_row(
            broker.position_history,
            broker.balances.get(QUOTE, Decimal(0)),
            marks,
            now,
            context.run.run_id,
            event.storage_id,
            mode,
        )
        with duckdb.get_connection() as connection:
            with transaction(connection):
                insert_rows(connection, "trading.orders", new_rows)
                for order in updates:
                    connection.execute(
                        """UPDATE trading.orders SET status = ?, price = coalesce(?, price), fee = coalesce(?, fee),
                           updated_at = ?, reason = coalesce(?, reason) WHERE client_order_id = ? AND status <> ?""",
                        [
                            order.status,
                            order.fill_price,
                            order.fee,
                            now,
                            order.reason,
                            order.client_order_id,
                            order.status,
                        ],
                    )
                connection.execute("DELETE FROM trading.positions WHERE mode = ?", [mode])
                insert_rows(
                    connection, "trading.positions", [{**asdict(p), "mode": mode} for p in broker.position_history]
                )
                insert_rows(connection, "trading.portfolio", [portfolio])
                # The broker's state as of this run, and only that: each snapshot holds all history.
                connection.execute("DELETE FROM trading.paper_state")
                insert_rows(
                    connection,
                    "trading.paper_state",
                    [
                        {
                            "saved_at": now,
                            "run_id": context.run.run_id,
                            "signal_storage_id": event.storage_id,
                            "state": dump_broker(broker),
                        }
                    ],
                )
            orders_total = connection.execute("SELECT count(*) FROM trading.orders").fetchall()[0][0]
            positions_total = connection.execute("SELECT count(*) FROM trading.positions").fetchall()[0][0]
        write_audit(duckdb, log, event)
        _notify(context, notifier, secrets, new_rows)
        yield from _execution_results(
            {"new_orders": len(new_rows), "fills": len(fills), "dagster/row_count": orders_total, "mode": mode.value},
            {"open": len(broker.positions), "dagster/row_count": positions_total},
            portfolio,
        )

    execution_spec = dict(
        specs=[
            dg.AssetSpec(
                ORDERS_KEY,
                # The paper broker fills and watches stops on the base candles stored since its last run.
                deps=[DECISIONS_KEY, CANDLES_KEY],
                group_name="trading",
                kinds={"duckdb"},
                description="Every order, keyed by its client order id (derived from the decision): "
                "status, fill price, fee, the risk checks and the config hash. Its internal state, "
                "trading.paper_state, holds the paper broker's newest snapshot (one row).",
            ),
            dg.AssetSpec(
                POSITIONS_KEY,
                deps=[ORDERS_KEY],
                group_name="trading",
                kinds={"duckdb"},
                description="Every position, open and closed, with stop, target and realized PnL.",
            ),
            dg.AssetSpec(
                PORTFOLIO_KEY,
                deps=[POSITIONS_KEY],
                group_name="trading",
                kinds={"duckdb"},
                description="One row per decision run: balances, positions marked to the last close, equity.",
            ),
        ],
        name="execution",
        pool=DUCKDB_POOL,
    )
    if mode is Mode.LIVE:  # the keyed client exists only then: its keys (EnvVar) are required only then

        @dg.multi_asset(**execution_spec)
        def execution(
            context: dg.AssetExecutionContext,
            duckdb: TracerDuckDB,
            exchange: ExchangeResource,
            notifier: NotifierResource,
            live_exchange: LiveExchangeResource,
        ):
            yield from execute(context, duckdb, exchange, notifier, live_exchange)
    else:

        @dg.multi_asset(**execution_spec)
        def execution(
            context: dg.AssetExecutionContext,
            duckdb: TracerDuckDB,
            exchange: ExchangeResource,
            notifier: NotifierResource,
        ):
            yield from execute(context, duckdb, exchange, notifier, None)

    return [decisions, execution]


def trading_mode(settings: Settings) -> tuple[str, str]:
    """(Mode.LIVE, "") only when every live condition (docs/architecture.md) holds and the exchange is
    a real one; else (Mode.DRY, every reason), and the decision job trades on paper."""
    allowed, reason = live_allowed(settings, settings.environ.get(API_KEY_VAR), settings.environ.get(SECRET_VAR))
    if allowed and settings.is_replay:
        return Mode.DRY, "the replay exchange takes no live orders (TRACER_EXCHANGE=replay)"
    return (Mode.LIVE, "") if allowed else (Mode.DRY, reason)


def _execution_results(orders: dict, positions: dict, portfolio: dict):
    yield dg.MaterializeResult(asset_key=ORDERS_KEY, metadata=orders)
    yield dg.MaterializeResult(asset_key=POSITIONS_KEY, metadata=positions)
    yield dg.MaterializeResult(
        asset_key=PORTFOLIO_KEY,
        metadata={
            name: float(portfolio[name]) for name in ("equity", "quote_balance", "realized_pnl", "unrealized_pnl")
        },
    )


def _notify(context, notifier: NotifierResource, secrets: list[str], rows: list[dict]) -> None:
    # A failed notification is logged and never breaks trading (Notifier.notify never raises).
    messenger = notifier.notifier(secrets)
    for row in rows:
        for delivery in messenger.notify(format_order_message(row)):
            if not delivery.ok:
                context.log.warning(f"notification over {delivery.channel} failed: {delivery.error}")


def write_audit(duckdb: TracerDuckDB, log: audit_files.AuditLog, event: SignalEvent | None = None) -> None:
    """Every committed decision and order that is not in the audit files yet goes there exactly
    once, then is marked `audited_at`: a run killed between its commit and its audit lines
    leaves them unmarked, and the next run writes them (AuditLog.record_once skips the ones the
    killed run did write). With `event`, the cycle is counted in macro_diagnostics.json and the
    event's last decision recorded there."""
    with duckdb.get_connection() as connection:
        decisions = (
            connection.sql(
                "SELECT * EXCLUDE (audited_at) FROM trading.decisions "
                "WHERE audited_at IS NULL ORDER BY decided_at, symbol"
            )
            .pl()
            .to_dicts()
        )
        orders = (
            connection.sql(
                "SELECT * EXCLUDE (audited_at) FROM trading.orders "
                "WHERE audited_at IS NULL ORDER BY ts, client_order_id"
            )
            .pl()
            .to_dicts()
        )
        last = (
            None
            if event is None
            else connection.sql(
                "SELECT * EXCLUDE (audited_at) FROM trading.decisions "
                "WHERE signal_run_id = ? AND signal_storage_id = ? "
                "ORDER BY symbol DESC LIMIT 1",
                params=[event.run_id, event.storage_id],
            )
            .pl()
            .to_dicts()
        )
    log.record_once(decisions, orders)
    now = datetime.now(UTC)
    with duckdb.get_connection() as connection:
        with transaction(connection):
            connection.execute(
                "UPDATE trading.decisions SET audited_at = ? WHERE decision_id IN (SELECT unnest(?))",
                [now, [row["decision_id"] for row in decisions]],
            )
            connection.execute(
                "UPDATE trading.orders SET audited_at = ? WHERE client_order_id IN (SELECT unnest(?))",
                [now, [row["client_order_id"] for row in orders]],
            )
    if event is not None:
        log.update_diagnostics(cycle_ok=True, last_decision=last[0] if last else None, last_error=None)


def _holdings(connection, settings: Settings, mode: str) -> tuple[dict[str, Position], Decimal]:
    """The open position per symbol and the quote balance the deciders see: the paper broker's,
    or in LIVE mode the live positions and exchange balance the last execution recorded."""
    if mode is not Mode.LIVE:
        broker = _load_paper_broker(connection, settings)
        return broker.positions, broker.available(QUOTE)
    columns = [f.name for f in fields(Position)]
    positions = connection.execute(
        f"SELECT {', '.join(columns)} FROM trading.positions WHERE mode = 'LIVE' AND closed_at IS NULL"
    ).fetchall()
    balance = connection.execute(
        "SELECT quote_balance FROM trading.portfolio WHERE mode = 'LIVE' ORDER BY ts DESC LIMIT 1"
    ).fetchall()
    held = {}
    for row in positions:
        position = Position(**dict(zip(columns, row)))
        held[position.symbol] = position
    return held, balance[0][0] if balance else Decimal(0)


def _load_paper_broker(connection, settings: Settings) -> PaperBroker:
    if table_exists(connection, "trading.paper_state"):
        row = connection.execute(
            "SELECT state FROM trading.paper_state ORDER BY saved_at DESC, rowid DESC LIMIT 1"
        ).fetchall()
        if row:
            return load_broker(row[0][0])
    bases = (
        {symbol.split("/")[0]: settings.sim_base_balance for symbol in settings.symbols}
        if settings.sim_base_balance
        else {}
    )
    return PaperBroker(QUOTE, settings.sim_quote_balance, bases, settings.fee_rate, settings.slippage_bps)


def _new_candles(connection, settings: Settings, broker: PaperBroker, now: datetime) -> pl.DataFrame:
    """Base-timeframe candles the broker has not seen yet, oldest first. For a symbol it has
    never seen, from its oldest pending order (that order's next open), else from `now`:
    before that there is nothing of the broker's own to fill or watch."""
    pending: dict[str, datetime] = {}
    for order in broker.orders:
        if order.status == "pending":
            pending[order.symbol] = min(order.submitted_at, pending.get(order.symbol, order.submitted_at))
    frames = []
    for symbol in settings.symbols:
        seen = broker.last_candle(symbol)
        if seen is not None:
            condition, since = "ts > ?", seen[0]
        else:
            condition, since = "ts >= ?", pending.get(symbol, now)
        frame = connection.sql(
            "SELECT symbol, ts, open, high, low, close FROM market.candles "
            f"WHERE symbol = ? AND {condition} ORDER BY ts",
            params=[symbol, since],
        ).pl()
        frames.append(frame.with_columns(pl.col("ts").dt.convert_time_zone("UTC")))
    return pl.concat(frames).sort("ts", "symbol")


def _feed(broker: PaperBroker, candles: pl.DataFrame) -> list:
    fills = []
    for symbol, ts, o, h, low, c in candles.iter_rows():
        fills += broker.on_candle(symbol, ts, o, h, low, c)
    return fills


def _last_close(broker: PaperBroker, symbol: str) -> Decimal | None:
    seen = broker.last_candle(symbol)
    return None if seen is None else seen[1]


def _ask_llm(llm, symbol, selection, indicators, signals, held: dict, free_quote: Decimal, settings) -> Decision:
    timeframe = selection.timeframe or settings.base_timeframe
    position = held.get(symbol)
    portfolio = PortfolioState(QUOTE, free_quote, {symbol: position} if position else {})
    try:
        ctx = context_from_frames(
            [symbol],
            indicators,
            signals,
            {},
            portfolio,
            settings.min_allowed_order_amount,
            settings.max_order_amount,
            timeframe,
        )
    except ValueError as exc:
        return Decision(symbol, timeframe, Action.HOLD, 0.0, f"LLM not asked: {exc}")
    outcome = decide_with_llm(llm, ctx)
    if not outcome.ok or outcome.action == Action.HOLD:
        return Decision(symbol, timeframe, Action.HOLD, outcome.confidence or 0.0, f"LLM: {outcome.reason}")
    price = ctx.markets[symbol].price
    return Decision(
        symbol,
        timeframe,
        Action(outcome.action),
        float(outcome.confidence or 0.0),
        f"LLM ({outcome.model}): {outcome.reason}",
        price=price,
        stop_loss=outcome.stop_loss,
        take_profit=outcome.take_profit,
        size_quote=outcome.position_size_quote,
    )
