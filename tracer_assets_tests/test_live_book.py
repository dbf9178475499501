"""The live book: positions rebuilt from the executions the exchange reported, checked the
way a trader would (what is held, what it cost, what was realized, which fees), with every
expected value worked out by hand in exact Decimal arithmetic; and the tick-side watch of a
live position's stop and target (`exit_trigger`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal as D

from tracer_assets.trading.live_book import Execution, book_positions, exit_trigger
from tracer_assets.trading.positions import Position

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
SYMBOL = "BTC/USDT"


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def buy(
    cid: str,
    filled: str,
    price: str,
    fee: str | None = None,
    fee_currency: str | None = None,
    ts: datetime = T0,
    stop: str | None = None,
    target: str | None = None,
    symbol: str = SYMBOL,
) -> Execution:
    return Execution(
        cid,
        symbol,
        "buy",
        D(filled),
        D(price),
        None if fee is None else D(fee),
        fee_currency,
        ts,
        None if stop is None else D(stop),
        None if target is None else D(target),
    )


def sell(
    cid: str,
    filled: str,
    price: str,
    fee: str | None = None,
    fee_currency: str | None = None,
    ts: datetime = T0,
    symbol: str = SYMBOL,
) -> Execution:
    return Execution(cid, symbol, "sell", D(filled), D(price), None if fee is None else D(fee), fee_currency, ts)


# --- 1-3: where the fee was charged ---------------------------------------------------------


def test_buy_with_the_fee_in_base_holds_filled_minus_fee_and_costs_the_quote_spent():
    book = book_positions([buy("b1", "0.5", "60000", "0.0005", "BTC", stop="58000", target="65000")])

    [position] = book.positions
    assert position.position_id == "b1"
    assert position.symbol == SYMBOL
    assert position.amount == D("0.5") - D("0.0005") == D("0.4995")  # BTC credited to the account
    assert position.cost_basis == D("0.5") * D("60000") == D("30000")  # USDT that left the account
    assert position.fees_paid == D("0.0005") * D("60000") == D("30")  # the fee's value in USDT at the fill
    assert position.entry_price == D("60000")  # the fill price, not cost / amount
    assert (position.stop_loss, position.take_profit) == (D("58000"), D("65000"))
    assert position.opened_at == T0
    assert position.closed_at is None and position.is_open
    assert position.realized_pnl == 0
    assert book.open_positions == {SYMBOL: position}
    assert book.notes == []


def test_buy_with_the_fee_in_quote_holds_filled_and_adds_the_fee_to_the_cost():
    book = book_positions([buy("b1", "0.5", "60000", "30", "USDT")])

    [position] = book.positions
    assert position.amount == D("0.5")
    assert position.cost_basis == D("0.5") * D("60000") + D("30") == D("30030")
    assert position.fees_paid == D("30")
    assert position.entry_price == D("60000")
    assert book.notes == []


def test_fee_in_a_third_currency_leaves_the_amounts_untouched_and_is_noted():
    book = book_positions(
        [
            buy("b-bnb", "0.5", "60000", "0.01", "BNB", ts=at(0)),
            sell("s-bnb", "0.2", "61000", "0.004", "BNB", ts=at(5)),
        ]
    )

    [position] = book.positions
    # Buy: 0.5 held, cost 0.5 * 60000 = 30000, no fee counted.
    # Sell 0.2: proceeds 0.2 * 61000 = 12200 (nothing deducted); basis 30000 * 0.2 / 0.5 = 12000.
    assert position.amount == D("0.5") - D("0.2") == D("0.3")
    assert position.cost_basis == D("30000") - D("12000") == D("18000")
    assert position.realized_pnl == D("12200") - D("12000") == D("200")
    assert position.fees_paid == 0
    assert len(book.notes) == 2
    assert "b-bnb" in book.notes[0] and "BNB" in book.notes[0]
    assert "s-bnb" in book.notes[1] and "BNB" in book.notes[1]


def test_a_zero_fee_in_a_third_currency_is_not_noted():
    book = book_positions([buy("b1", "1", "100", "0", "BNB")])
    assert book.positions[0].cost_basis == D("100")
    assert book.notes == []


# --- 4: adding to a position ----------------------------------------------------------------


def test_two_buys_average_the_entry_by_amount_and_sum_the_cost():
    book = book_positions(
        [
            buy("b1", "1", "100", "0.1", "USDT", ts=at(0), stop="90", target="120"),
            buy("b2", "3", "200", "0.6", "USDT", ts=at(5), stop="180"),  # target None: keeps 120
        ]
    )

    [position] = book.positions
    assert position.position_id == "b1" and position.opened_at == at(0)
    assert position.amount == D("1") + D("3") == D("4")
    assert position.entry_price == (D("1") * D("100") + D("3") * D("200")) / D("4") == D("175")
    assert position.cost_basis == (D("100") + D("0.1")) + (D("600") + D("0.6")) == D("700.7")
    assert position.fees_paid == D("0.1") + D("0.6") == D("0.7")
    assert position.stop_loss == D("180")  # replaced by the later buy's
    assert position.take_profit == D("120")  # the later buy had none: kept


def test_a_later_buy_without_stop_keeps_the_stop_and_its_target_replaces():
    book = book_positions(
        [
            buy("b1", "1", "100", ts=at(0), stop="90", target="120"),
            buy("b2", "1", "100", ts=at(5), target="130"),
        ]
    )
    position = book.positions[0]
    assert (position.stop_loss, position.take_profit) == (D("90"), D("130"))


def test_average_entry_is_rounded_to_18_places():
    book = book_positions([buy("b1", "1", "100", ts=at(0)), buy("b2", "2", "101", ts=at(5))])
    # (1 * 100 + 2 * 101) / 3 = 302 / 3 = 100.666..., 18 places, the last one rounded up
    assert book.positions[0].entry_price == D("100.666666666666666667")
    assert book.positions[0].cost_basis == D("302")


def test_entry_is_weighted_by_the_amounts_held_after_base_fees():
    book = book_positions(
        [
            buy("b1", "1", "100", "0.5", "BTC", ts=at(0)),  # holds 0.5
            buy("b2", "1", "200", "0", "BTC", ts=at(5)),  # holds 1
        ]
    )
    position = book.positions[0]
    assert position.amount == D("1.5")
    # (0.5 * 100 + 1 * 200) / 1.5 = 250 / 1.5 = 166.666..., 18 places (by the raw fills: 150)
    assert position.entry_price == D("166.666666666666666667")
    assert position.cost_basis == D("100") + D("200")
    assert position.fees_paid == D("0.5") * D("100") == D("50")


# --- 5: selling -----------------------------------------------------------------------------


def test_a_partial_sell_realizes_its_share_of_the_cost_and_a_full_sell_closes():
    book = book_positions(
        [
            buy("b1", "2", "100", "0.2", "USDT", ts=at(0)),  # cost 200 + 0.2 = 200.2
            sell("s1", "0.5", "110", "0.055", "USDT", ts=at(5)),
        ]
    )
    position = book.positions[0]
    # Basis of 0.5 of 2: 200.2 * 0.5 / 2 = 50.05; proceeds 0.5 * 110 - 0.055 = 54.945.
    assert position.amount == D("1.5")
    assert position.cost_basis == D("200.2") - D("50.05") == D("150.15")
    assert position.realized_pnl == D("54.945") - D("50.05") == D("4.895")
    assert position.fees_paid == D("0.2") + D("0.055") == D("0.255")
    assert position.is_open

    book = book_positions(
        [
            buy("b1", "2", "100", "0.2", "USDT", ts=at(0)),
            sell("s1", "0.5", "110", "0.055", "USDT", ts=at(5)),
            sell("s2", "1.5", "120", "0.18", "USDT", ts=at(10)),
        ]
    )
    [position] = book.positions
    # Proceeds 1.5 * 120 - 0.18 = 179.82 against the remaining basis 150.15: +29.67.
    assert position.amount == 0
    assert position.cost_basis == 0
    assert position.realized_pnl == D("4.895") + (D("179.82") - D("150.15")) == D("34.565")
    # Overall: all proceeds minus all cost, (54.945 + 179.82) - 200.2.
    assert position.realized_pnl == (D("54.945") + D("179.82")) - D("200.2")
    assert position.fees_paid == D("0.2") + D("0.055") + D("0.18") == D("0.435")
    assert position.closed_at == at(10)
    assert not position.is_open
    assert book.open_positions == {}
    assert book.notes == []


def test_a_full_sell_realizes_proceeds_less_the_quote_fee_minus_the_cost():
    book = book_positions(
        [
            buy("b1", "1", "100", "0.1", "USDT", ts=at(0)),  # cost 100.1
            sell("s1", "1", "90", "0.09", "USDT", ts=at(5)),  # proceeds 90 - 0.09 = 89.91
        ]
    )
    [position] = book.positions
    assert position.realized_pnl == D("89.91") - D("100.1") == D("-10.19")
    assert position.closed_at == at(5)


def test_binance_round_trip_base_fee_on_the_buy_quote_fee_on_the_sell():
    book = book_positions(
        [
            buy("b1", "0.5", "60000", "0.0005", "BTC", ts=at(0)),  # holds 0.4995 for 30000 USDT
            sell("s1", "0.4995", "62000", "30.969", "USDT", ts=at(60)),  # 0.4995 * 62000 = 30969, fee 0.1%
        ]
    )
    [position] = book.positions
    assert position.closed_at == at(60)
    assert position.realized_pnl == (D("0.4995") * D("62000") - D("30.969")) - D("30000") == D("938.031")
    assert position.fees_paid == D("30") + D("30.969") == D("60.969")


def test_a_sell_beyond_the_position_books_only_the_positions_share():
    book = book_positions(
        [
            buy("b1", "1", "100", ts=at(0)),
            sell("s1", "2", "110", "0.22", "USDT", ts=at(5)),  # 1 of the 2 sold was not the position's
        ]
    )
    [position] = book.positions
    # Proceeds (220 - 0.22) * 1 / 2 = 109.89, fee 0.22 / 2 = 0.11, basis 100.
    assert position.realized_pnl == (D("220") - D("0.22")) / 2 - D("100") == D("9.89")
    assert position.fees_paid == D("0.11")
    assert position.closed_at == at(5)


# --- 6: dust --------------------------------------------------------------------------------


def test_a_remainder_below_the_markets_smallest_sale_is_written_off():
    book = book_positions(
        [
            buy("b1", "1", "100", "0.1", "USDT", ts=at(0)),  # cost 100.1
            sell("s1", "0.9995", "110", ts=at(5)),  # leaves 0.0005 < 0.001
        ],
        dust={SYMBOL: D("0.001")},
    )

    [position] = book.positions
    # Sold basis 100.1 * 0.9995 = 100.04995, proceeds 0.9995 * 110 = 109.945 -> +9.89505;
    # the 0.0005 left cost 100.1 - 100.04995 = 0.05005, written off: 9.89505 - 0.05005 = 9.845,
    # i.e. everything received minus everything paid.
    assert position.realized_pnl == D("9.89505") - D("0.05005") == D("109.945") - D("100.1") == D("9.845")
    assert position.amount == 0
    assert position.cost_basis == 0
    assert position.closed_at == at(5)
    assert book.open_positions == {}
    [note] = book.notes
    assert SYMBOL in note and "s1" in note and "0.0005" in note and "dust" in note


def test_a_remainder_at_or_above_the_smallest_sale_stays_open():
    for left, sold in (("0.001", "0.999"), ("0.3", "0.7")):
        book = book_positions(
            [buy("b1", "1", "100", ts=at(0)), sell("s1", sold, "110", ts=at(5))], dust={SYMBOL: D("0.001")}
        )
        position = book.positions[0]
        assert position.is_open, left
        assert position.amount == D(left)
        assert position.cost_basis == D("100") * D(left)
        assert book.notes == []


def test_dust_is_per_symbol():
    executions = [buy("b1", "1", "100", ts=at(0)), sell("s1", "0.9995", "110", ts=at(5))]
    book = book_positions(executions, dust={"ETH/USDT": D("0.01")})
    assert book.positions[0].is_open and book.positions[0].amount == D("0.0005")
    book = book_positions(executions)  # no dust given at all
    assert book.positions[0].is_open and book.positions[0].amount == D("0.0005")
    assert book.notes == []


# --- 7: a sell with nothing to sell ---------------------------------------------------------


def test_a_sell_with_no_open_position_is_not_booked_and_is_noted():
    book = book_positions(
        [
            sell("s-old", "0.1", "60000", "6", "USDT", ts=at(0)),
            buy("e1", "1", "3000", ts=at(5), symbol="ETH/USDT"),
            sell("s-btc", "0.1", "60000", ts=at(10)),  # an ETH position does not make a BTC one
        ]
    )
    [position] = book.positions
    assert position.symbol == "ETH/USDT" and position.amount == D("1") and position.realized_pnl == 0
    assert len(book.notes) == 2
    assert "s-old" in book.notes[0] and SYMBOL in book.notes[0] and "no open position" in book.notes[0]
    assert "s-btc" in book.notes[1] and "no open position" in book.notes[1]


# --- 8: replay order ------------------------------------------------------------------------


def test_executions_are_replayed_in_time_order_and_zero_fills_are_ignored():
    in_order = [
        buy("b1", "1", "100", "0.1", "USDT", ts=at(0), stop="90"),
        buy("b2", "1", "120", "0.12", "USDT", ts=at(5), stop="110"),
        sell("s1", "2", "130", "0.26", "USDT", ts=at(10)),
    ]
    shuffled = [in_order[2], in_order[0], in_order[1]]
    book = book_positions(shuffled)
    assert book == book_positions(in_order)
    [position] = book.positions
    assert position.position_id == "b1" and position.opened_at == at(0)
    assert position.stop_loss == D("110")  # b2 came after b1, so its stop is the one kept
    # Proceeds 260 - 0.26 = 259.74; cost 100.1 + 120.12 = 220.22.
    assert position.realized_pnl == D("259.74") - D("220.22") == D("39.52")
    assert position.closed_at == at(10)
    assert book.notes == []

    # Zero fills (canceled or expired orders) change nothing: not a position, not a note.
    with_zeros = shuffled + [
        buy("b0", "0", "100", ts=at(-5)),  # would otherwise open the position and own its id
        sell("s0", "0", "100", ts=at(7)),
        buy("b9", "0", "100", ts=at(15)),
        sell("s9", "0", "100", ts=at(20)),  # would otherwise be a sell with no position
    ]
    assert book_positions(with_zeros) == book


# --- 9: reopening ---------------------------------------------------------------------------


def test_a_buy_after_a_close_opens_a_new_position():
    book = book_positions(
        [
            buy("b1", "1", "100", ts=at(0), stop="90", target="120"),
            sell("s1", "1", "110", ts=at(5)),
            buy("b2", "2", "105", ts=at(10), stop="100"),
        ]
    )
    first, second = book.positions
    assert first.position_id == "b1" and first.closed_at == at(5) and first.realized_pnl == D("10")
    assert second.position_id == "b2"
    assert second.opened_at == at(10) and second.closed_at is None
    assert second.amount == D("2") and second.cost_basis == D("210") and second.entry_price == D("105")
    assert (second.stop_loss, second.take_profit) == (D("100"), None)  # nothing inherited from b1
    assert second.realized_pnl == 0
    assert book.open_positions == {SYMBOL: second}


def test_a_buy_after_a_dust_close_opens_a_new_position():
    book = book_positions(
        [
            buy("b1", "1", "100", ts=at(0)),
            sell("s1", "0.9995", "110", ts=at(5)),
            buy("b2", "1", "100", ts=at(10)),
        ],
        dust={SYMBOL: D("0.001")},
    )
    first, second = book.positions
    assert not first.is_open
    assert second.position_id == "b2" and second.amount == D("1")  # the dust is not folded in


# --- 10: exit_trigger -----------------------------------------------------------------------


def position(stop: str | None = "90", target: str | None = "120", opened_at: datetime = T0) -> Position:
    return Position(
        "b1",
        SYMBOL,
        D("1"),
        D("100"),
        D("100"),
        None if stop is None else D(stop),
        None if target is None else D(target),
        opened_at,
    )


def candle(minutes: float, high: str, low: str) -> tuple[datetime, D, D]:
    return at(minutes), D(high), D(low)


def test_exit_trigger_stop_first_when_one_candle_touches_both():
    assert exit_trigger(position(), [candle(0, "105", "95"), candle(5, "125", "85")]) == ("stop", at(5))


def test_exit_trigger_ignores_candles_opening_before_the_position():
    pos = position(opened_at=at(10))
    # The candles at 0 and 5 touched the stop but opened before the buy; the one at 10 counts.
    candles = [candle(0, "100", "80"), candle(5, "100", "89"), candle(10, "121", "95")]
    assert exit_trigger(pos, candles) == ("target", at(10))
    assert exit_trigger(pos, candles[:2]) is None


def test_exit_trigger_target_when_only_the_high_reaches_it():
    assert exit_trigger(position(), [candle(0, "110", "95"), candle(5, "120", "100")]) == ("target", at(5))


def test_exit_trigger_stop_when_the_low_reaches_it():
    assert exit_trigger(position(), [candle(0, "110", "95"), candle(5, "100", "90")]) == ("stop", at(5))


def test_exit_trigger_none_when_untouched():
    assert exit_trigger(position(), [candle(0, "119.99", "90.01"), candle(5, "110", "95")]) is None
    assert exit_trigger(position(), []) is None


def test_exit_trigger_missing_levels_never_trigger():
    wild = [candle(0, "1000000", "0.01")]
    assert exit_trigger(position(stop=None, target=None), wild) is None
    assert exit_trigger(position(stop=None), wild) == ("target", at(0))
    assert exit_trigger(position(target=None), wild) == ("stop", at(0))


def test_exit_trigger_takes_the_earliest_candle_whatever_the_order_given():
    candles = [candle(10, "100", "80"), candle(5, "130", "95")]  # the stop later, the target earlier
    assert exit_trigger(position(), candles) == ("target", at(5))


def test_a_buy_and_its_sell_at_the_same_instant_open_then_close_whatever_their_ids():
    # "tracer-10-..." sorts before "tracer-9-..." as text: the tie is broken buys first, not by id.
    book = book_positions([sell("tracer-10-bbbbbbbb", "1", "110", ts=T0), buy("tracer-9-aaaaaaaa", "1", "100", ts=T0)])
    [closed] = book.positions
    assert closed.closed_at == T0 and closed.realized_pnl == D("10") and book.notes == []


def test_a_sells_fee_in_the_base_asset_comes_off_the_proceeds():
    # Buy 1 at 100 (no fee); sell 0.999 at 110 paying 0.001 BTC: proceeds 0.999 x 110 - 0.001 x 110 = 109.78.
    # Closed share of the cost: 100 x 0.999 = 99.9; realized 109.78 - 99.9 = 9.88.
    book = book_positions([buy("b1", "1", "100", ts=at(0)), sell("s1", "0.999", "110", "0.001", "BTC", ts=at(5))])
    [position] = book.positions
    assert position.realized_pnl == D("9.88")
    assert position.fees_paid == D("0.11")
