"""trading/decisions -> trading/orders -> trading/positions, trading/portfolio: what the
signal sensor's decision job materializes for one signals/signals materialization.

Exactly once: a decision's id derives from (signal event, symbol), the event being the signals
run's id and its storage id, and an order's client id from (decision id, side); a re-run of the
same signal event reuses the decisions already recorded (no second LLM call) and the brokers
return the order already placed under that client id instead of placing another. Every
committed decision and order reaches the audit files exactly once (`write_audit`).
"""

import os
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from functools import partial

import dagster as dg
import polars as pl

from tracer_assets.features.keys import INDICATORS_KEY, INDICATORS_TABLE
from tracer_assets.llm.resource import AnthropicResource
from tracer_assets.market.keys import CANDLES_KEY, OHLCV_KEY
from tracer_assets.metadata import markdown_table
from tracer_assets.money import decimal_or_none
from tracer_assets.notify import format_order_message
from tracer_assets.policies import DUCKDB_POOL
from tracer_assets.ranking.keys import STRATEGY_RANKING_KEY, STRATEGY_RANKING_TABLE
from tracer_assets.research.backtest import candle_arrays
from tracer_assets.research.keys import BACKTESTS_KEY, BACKTESTS_TABLE, STRATEGIES_KEY
from tracer_assets.resources.ccxt_exchange import spot_market_context
from tracer_assets.resources.exchange import ExchangeResource
from tracer_assets.resources.notifier import NotifierResource
from tracer_assets.resources.warehouse import TracerDuckDB
from tracer_assets.settings import Settings
from tracer_assets.signals.keys import HISTORY_KEY as SIGNAL_HISTORY_KEY
from tracer_assets.signals.keys import HISTORY_TABLE, SIGNALS_KEY
from tracer_assets.tables import table_exists
from tracer_assets.trading import audit as audit_files
from tracer_assets.trading.accounts import paper_broker
from tracer_assets.trading.decide import (
    ENTRY_LABELS,
    Decision,
    SignalEvent,
    decide_by_strategy,
    decision_id,
    exact_confidence,
    kelly_inputs,
    macro_selection,
    payoff_ratio,
    rules_decision,
    signal_valid_until,
    stale_reason,
)
from tracer_assets.trading.execution import ExecutionFailed, execute
from tracer_assets.trading.keys import DECISIONS_KEY, ORDERS_KEY, PORTFOLIO_KEY, POSITIONS_KEY, SIGNAL_STORAGE_TAG
from tracer_assets.trading.live import live_allowed
from tracer_assets.trading.llm_decision import PortfolioState, context_from_frames, decide_with_llm
from tracer_assets.trading.orders import Action, Mode
from tracer_assets.trading.positions import Position
from tracer_assets.trading.resources import BrokerResource
from tracer_assets.trading.risk import RiskLimits
from tracer_assets.trading.secrets import API_KEY_VAR, SECRET_VAR, secrets_to_redact
from tracer_assets.trading.signal_checks import unpassed_blocking_checks
from tracer_assets.trading.store import QUOTE, DecisionRow, TradingStore
from tracer_assets.trading.strategy_book import candles_up_to, edge, strategy_book
from tracer_assets.trading.ui import ORDERS_SCHEMA, PORTFOLIO_SCHEMA, POSITIONS_SCHEMA, execution_metadata
from tracer_assets.ui_tables import COLUMN_SCHEMA


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
    """Per (symbol, timeframe): the out-of-sample stats of the best-scoring strategy that the
    ranking keeps (every backtested one before the first ranking), in the macro orchestrator's
    terms (totalPNL, winRate, trades, drawdown), and its payoff ratio (average win / average loss,
    from the profit factor) for Kelly sizing."""
    if not table_exists(connection, BACKTESTS_TABLE):
        return {}
    kept = ""
    if table_exists(connection, STRATEGY_RANKING_TABLE):
        kept = f" AND strategy_id IN (SELECT item_id FROM {STRATEGY_RANKING_TABLE} WHERE status = 'kept')"
    rows = connection.sql(
        f"""SELECT symbol, timeframe, pnl, win_rate, trades, max_drawdown, strategy_id, profit_factor
            FROM {BACKTESTS_TABLE} WHERE "window" = 'out_of_sample'{kept}
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
    timeframes = settings.market.all_timeframes
    mode, mode_reason = trading_mode(settings)
    config_hash = audit_files.config_hash(audit_files.trading_config(settings))

    def decide(context, duckdb: TracerDuckDB, exchange: ExchangeResource, llm) -> dg.MaterializeResult:
        event = signal_event(context)
        audit = audit_files.AuditLog(settings.trading.log_dir, secrets=secrets_to_redact(settings))
        store = TradingStore(duckdb)
        store.create()
        done = store.decisions(event, settings.market.symbols)
        if not done.is_empty():
            context.log.info(f"signal event {event.storage_id} was decided already: {done.height} decisions reused")
            write_audit(store, audit)  # what a killed run committed and did not log yet
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
            by_strategy = settings.trading.decider == "strategy"
            kept, known, out_of_sample = strategy_book(connection) if by_strategy else ({}, {}, {})
            # The newest candle of each series an earlier signal event was computed on.
            previous_signal_ts = (
                {
                    (symbol, timeframe): ts
                    for symbol, timeframe, ts in connection.execute(
                        f"SELECT symbol, timeframe, max(ts) FROM {HISTORY_TABLE} WHERE run_id <> ? GROUP BY ALL",
                        [event.run_id],
                    ).fetchall()
                }
                if by_strategy
                else {}
            )
        held, free_quote = _holdings(store, settings, mode)
        bought_by = store.bought_by()
        read_before = store.strategy_reads() if by_strategy else {}
        doubts = unpassed_blocking_checks(context.instance, SIGNALS_KEY, event.run_id, signal_checks)
        # The timeframe a position was bought on ("" if unknown): its label decides the exit.
        held_timeframes = {symbol: bought_by.get(p.position_id, ("",))[0] or "" for symbol, p in held.items()}
        newest_indicators = indicators.sort("ts").group_by("symbol", "timeframe").last()
        by_symbol_tf = _rows_by_symbol_timeframe(newest_indicators)
        now = exchange.now(ask_exchange=mode is Mode.LIVE)  # a signal's age is measured on the exchange's clock
        decided_at = datetime.now(UTC)
        rows: list[DecisionRow] = []
        decided: list[Decision] = []
        for symbol in settings.market.symbols:
            mine = signals.filter(pl.col("symbol") == symbol)
            signals_tf = {row["timeframe"]: row for row in mine.iter_rows(named=True)}
            indicators_tf = {tf: by_symbol_tf[(symbol, tf)] for tf in timeframes if (symbol, tf) in by_symbol_tf}
            prices = {tf: decimal_or_none(row["close"]) for tf, row in indicators_tf.items()}
            valid_until = signal_valid_until(signals_tf.values(), settings.trading.max_signal_age_seconds)
            selection = macro_selection(
                symbol,
                signals_tf,
                {tf: stats[(symbol, tf)] for tf in timeframes if (symbol, tf) in stats},
                timeframes,
                settings.trading.macro_min_win_rate,
                ENTRY_LABELS[settings.trading.decider],
            )
            picked = None
            if by_strategy:
                source = "strategy"
                position = held.get(symbol)
                decision, picked = decide_by_strategy(
                    selection,
                    None if position is None else bought_by.get(position.position_id, ("", None, None)),
                    kept,
                    known,
                    {tf: out_of_sample.get((symbol, tf), ()) for tf in timeframes},
                    partial(_candles_until, duckdb, symbol, {tf: row["ts"] for tf, row in signals_tf.items()}, newest),
                    settings.market.base_timeframe,
                    previous_signal_ts,
                    read_before,
                )
            else:
                source = "rules"
                decision = rules_decision(
                    selection,
                    signals_tf,
                    indicators_tf,
                    prices,
                    held_timeframes.get(symbol),
                    settings.market.base_timeframe,
                    settings.trading.tb_min_signal_quality,
                    settings.trading.tb_min_conviction_score,
                )
            if doubts:  # the signals' own guards did not pass: nothing they say is acted on
                decision = Decision(symbol, None, Action.HOLD, 0.0, "signals/signals not trusted: " + "; ".join(doubts))
            elif valid_until is None or now > valid_until:  # never traded, whatever the deciders would say
                decision = Decision(
                    symbol,
                    None,
                    Action.HOLD,
                    0.0,
                    stale_reason(valid_until, now, settings.trading.max_signal_age_seconds),
                )
            elif llm is not None and (selection.timeframe is not None or symbol in held):
                decision, source = (
                    _ask_llm(llm, symbol, selection, indicators, signals, held, free_quote, settings, exchange),
                    "llm",
                )
            signal_ts = signals_tf.get(decision.timeframe or settings.market.base_timeframe, {}).get("ts", newest)
            # A buy is sized by its strategy's out-of-sample edge (Kelly).
            if decision.action is not Action.BUY:
                kelly = kelly_inputs(None)
            elif picked is not None:
                kelly = edge(picked, out_of_sample.get((symbol, decision.timeframe), ()))
            else:
                kelly = kelly_inputs(stats.get((symbol, decision.timeframe)))
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
                    "size_quote": decision.size_quote
                    if decision.size_quote is not None
                    else settings.trading.order_amount,
                    "config_hash": config_hash,
                    "valid_until": valid_until,
                    "stop_fraction": decision.stop_fraction,
                    "target_fraction": decision.target_fraction,
                    "trailing_stop": decision.trailing_stop,
                    "strategy_id": decision.strategy_id,
                    "strategy_parameters": decision.strategy_parameters,
                    # The selected strategy's out-of-sample edge, for Kelly sizing of a buy.
                    **kelly,
                }
            )
            decided.append(decision)
        store.record_decisions(rows)
        write_audit(store, audit)
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
                "decider": settings.trading.decider,
                **actions,
                "decisions": dg.MetadataValue.md(markdown_table(table)),
            }
        )

    common = dict(
        key=DECISIONS_KEY,
        deps=[
            SIGNALS_KEY,
            SIGNAL_HISTORY_KEY,
            INDICATORS_KEY,
            BACKTESTS_KEY,
            STRATEGY_RANKING_KEY,
            STRATEGIES_KEY,
            OHLCV_KEY,
        ],  # fmt: skip
        description=(
            "One decision per symbol for each new signals/signals materialization: the macro selection over "
            "the timeframes (Bull backtest regime + an ensemble label the decider enters on, highest total PnL), "
            "then the strategy, "
            "the rules or the LLM decider (TRACER_DECIDER); HOLD with the reason whenever in doubt. Append-only. Also "
            "reads what is held, from the trading group's own tables as the previous execution left them "
            "(trading.orders, trading.positions, trading.portfolio, trading.paper_state): a feedback loop, "
            "not drawn as edges, which would be a cycle."
        ),
        pool=DUCKDB_POOL,
        group_name="trading",
        kinds={"duckdb"},
    )

    @dg.asset(**common)
    def decisions(
        context: dg.AssetExecutionContext, duckdb: TracerDuckDB, exchange: ExchangeResource, llm: AnthropicResource
    ):
        return decide(context, duckdb, exchange, llm if settings.trading.decider == "llm" else None)

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
                metadata={COLUMN_SCHEMA: ORDERS_SCHEMA},
            ),
            dg.AssetSpec(
                POSITIONS_KEY,
                deps=[ORDERS_KEY],
                group_name="trading",
                kinds={"duckdb"},
                description="Every position, open and closed, with stop, target and realized PnL.",
                metadata={COLUMN_SCHEMA: POSITIONS_SCHEMA},
            ),
            dg.AssetSpec(
                PORTFOLIO_KEY,
                deps=[POSITIONS_KEY],
                group_name="trading",
                kinds={"duckdb"},
                description="One row per decision run: balances, positions marked to the last close, equity.",
                metadata={COLUMN_SCHEMA: PORTFOLIO_SCHEMA},
            ),
        ],
        name="execution",
        pool=DUCKDB_POOL,
    )

    @dg.multi_asset(**execution_spec)
    def execution(
        context: dg.AssetExecutionContext,
        duckdb: TracerDuckDB,
        exchange: ExchangeResource,
        notifier: NotifierResource,
        broker: BrokerResource,
    ):
        event = signal_event(context)
        secrets = [*secrets_to_redact(settings), *notifier.secrets()]
        if settings.trading.live_flags_on and mode is not Mode.LIVE:
            context.log.warning(f"every live flag is on but this run trades on paper: {mode_reason}")
        store = TradingStore(duckdb)
        store.create()
        run_id = context.run.run_id
        account = broker.account(settings, exchange, run_id, config_hash, context.log.warning)
        try:
            outcome = execute(
                account, store, event, settings.market.symbols, RiskLimits.from_settings(settings), run_id, config_hash
            )
        except ExecutionFailed as exc:
            raise dg.Failure(str(exc)) from exc
        for note in outcome.settlement.notes:
            context.log.warning(note)
        write_audit(store, audit_files.AuditLog(settings.trading.log_dir, secrets=secrets), event)
        _notify(context, notifier, secrets, outcome.rows)
        orders_total, positions_total = store.counts()
        facts = outcome.settlement.facts
        with store.connection() as connection:  # the pages a trader opens: the newest rows, the equity plot
            moved = bool(outcome.rows) or bool(facts.get("fills")) or bool(facts.get("reconciled"))
            shown = execution_metadata(connection, outcome.portfolio["mode"], outcome.settlement.marks, moved)
        yield dg.MaterializeResult(
            asset_key=ORDERS_KEY,
            metadata={
                "new_orders": len(outcome.rows),
                "sent": sum(row.get("exchange_order_id") is not None for row in outcome.rows),
                "mode": mode.value,
                "dagster/row_count": orders_total,
                **{name: value for name, value in facts.items() if name != "open"},
                **shown[ORDERS_KEY],
            },
        )
        yield dg.MaterializeResult(
            asset_key=POSITIONS_KEY,
            metadata={"open": facts["open"], "dagster/row_count": positions_total, **shown[POSITIONS_KEY]},
        )
        yield dg.MaterializeResult(
            asset_key=PORTFOLIO_KEY,
            metadata={
                name: float(outcome.portfolio[name])
                for name in ("equity", "quote_balance", "realized_pnl", "unrealized_pnl")
            }
            | shown[PORTFOLIO_KEY],
        )

    return [decisions, execution]


def _candles_until(duckdb: TracerDuckDB, symbol: str, signal_ts: dict, newest, timeframe: str) -> dict:
    """The symbol's candles of `timeframe` up to the newest closed one the signals were computed
    on (`signal_ts` per timeframe, else `newest`), oldest first, with their `ts`."""
    with duckdb.get_connection() as connection:
        frame = candles_up_to(connection, symbol, timeframe, signal_ts.get(timeframe, newest))
    return {**candle_arrays(frame), "ts": frame["ts"].to_list()}


def trading_mode(settings: Settings, environ: Mapping[str, str] | None = None) -> tuple[Mode, str]:
    """(Mode.LIVE, "") only when every live condition (docs/architecture.md) holds and the exchange is
    a real one; else (Mode.DRY, every reason), and the decision job trades on paper."""
    environ = os.environ if environ is None else environ  # the keys' presence only: never kept
    allowed, reason = live_allowed(settings.trading, environ.get(API_KEY_VAR), environ.get(SECRET_VAR))
    if allowed and settings.market.is_replay:
        return Mode.DRY, "the replay exchange takes no live orders (TRACER_EXCHANGE=replay)"
    return (Mode.LIVE, "") if allowed else (Mode.DRY, reason)


def _notify(context, notifier: NotifierResource, secrets: list[str], rows: list[dict]) -> None:
    # A failed notification is logged and never breaks trading (Notifier.notify never raises).
    messenger = notifier.notifier(secrets)
    for row in rows:
        for delivery in messenger.notify(format_order_message(row)):
            if not delivery.ok:
                context.log.warning(f"notification over {delivery.channel} failed: {delivery.error}")


def write_audit(store: TradingStore, log: audit_files.AuditLog, event: SignalEvent | None = None) -> None:
    """Every committed decision and order that is not in the audit files yet goes there exactly
    once, then is marked `audited_at`: a run killed between its commit and its audit lines
    leaves them unmarked, and the next run writes them (AuditLog.record_once skips the ones the
    killed run did write). With `event`, the cycle is counted in macro_diagnostics.json and the
    event's last decision recorded there."""
    decisions, orders = store.unaudited()
    last = None if event is None else store.last_decision(event)
    log.record_once(decisions, orders)
    decision_ids = [row["decision_id"] for row in decisions]
    store.mark_audited(decision_ids, [row["client_order_id"] for row in orders], datetime.now(UTC))
    if event is not None:
        log.update_diagnostics(cycle_ok=True, last_decision=last, last_error=None)


def _holdings(store: TradingStore, settings: Settings, mode: Mode) -> tuple[dict[str, Position], Decimal]:
    """The open position per symbol and the quote balance the deciders see: the paper broker's,
    or in LIVE mode the live positions and exchange balance the last execution recorded."""
    if mode is not Mode.LIVE:
        broker = paper_broker(store, settings)
        return broker.positions, broker.available(QUOTE)
    return store.held(mode)


def _ask_llm(
    llm, symbol, selection, indicators, signals, held: dict, free_quote: Decimal, settings, exchange: ExchangeResource
) -> Decision:
    timeframe = selection.timeframe or settings.market.base_timeframe
    position = held.get(symbol)
    portfolio = PortfolioState(QUOTE, free_quote, {symbol: position} if position else {})
    # Open interest and funding where the exchange has them (its perpetual); replay has neither.
    market_context = {} if exchange.is_replay else {symbol: spot_market_context(exchange.client(), symbol)}
    try:
        ctx = context_from_frames(
            [symbol],
            indicators,
            signals,
            market_context,
            portfolio,
            settings.trading.min_allowed_order_amount,
            settings.trading.max_order_amount,
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
