"""Money as exact decimals: the one place numbers become Decimals and are rounded to storage.

Every amount, price, fee and balance is a Decimal that fits DECIMAL(38, 18): at most 20 integer
digits and 18 places. A float from outside (ccxt parses the exchange's decimal strings into
floats, DuckDB returns doubles) becomes a Decimal through its shortest repr, which gives back
the digits that were written (0.1 stays 0.1, 1e-05 becomes 0.00001). Pure: no Dagster.
"""

from __future__ import annotations

import math
from decimal import Context, Decimal, InvalidOperation

SCALE = Decimal("1e-18")  # the storage scale: DECIMAL(38, 18)
MAX_ABS = Decimal("1e20")
# Wide enough that no intermediate product of two DECIMAL(38, 18) values is rounded.
EXACT = Context(prec=100)
BPS = Decimal(10_000)


def decimal_text(value: Decimal) -> str:
    """The exact decimal string, never in exponent form (Decimal('1E-8') -> '0.00000001')."""
    return format(value, "f")


def to_decimal(value: object, name: str) -> Decimal | None:
    """A number from outside as an exact Decimal; None stays None. A bool, a non-number or a
    non-finite number raises, naming `name`."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str, Decimal)):
        raise TypeError(f"{name}={value!r}: expected a number, got {type(value).__name__}")
    try:
        number = value if isinstance(value, Decimal) else Decimal(str(value))
    except InvalidOperation:
        raise ValueError(f"{name}={value!r}: not a number") from None
    if not number.is_finite():
        raise ValueError(f"{name}={value!r}: not a finite number")
    return number


def decimal_or_none(value: object) -> Decimal | None:
    """A stored number (a DuckDB double or decimal) as an exact Decimal; None for null, NaN and
    infinity, the values that mean "unknown" in a table."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return None
    number = value if isinstance(value, Decimal) else Decimal(str(value))
    return number if number.is_finite() else None


def exact(value: object, name: str, positive: bool = False, non_negative: bool = False) -> Decimal:
    """A Decimal that fits DECIMAL(38, 18); floats are refused (money is exact)."""
    if not isinstance(value, Decimal):
        raise TypeError(f"{name}={value!r}: expected a decimal.Decimal, got {type(value).__name__}")
    if not value.is_finite():
        raise ValueError(f"{name}={value}: must be a finite number")
    if positive and value <= 0:
        raise ValueError(f"{name}={value}: must be greater than 0")
    if non_negative and value < 0:
        raise ValueError(f"{name}={value}: must be 0 or more")
    if abs(value) >= MAX_ABS or value != value.quantize(SCALE, context=EXACT):
        raise ValueError(f"{name}={value}: must have at most 20 integer digits and 18 decimal places")
    return value


def to_scale(value: Decimal, rounding: str) -> Decimal:
    """To the storage scale (18 places), in the direction the caller chose (against the account:
    costs and fees up, proceeds down)."""
    result = value.quantize(SCALE, rounding=rounding, context=EXACT)
    return result.quantize(Decimal(1)) if result == result.to_integral_value() else result.normalize(EXACT)
