"""The paper broker's state as one exact JSON document (Decimals and datetimes tagged), so a
restart resumes from DuckDB exactly where it stopped. Pure: no Dagster, no DuckDB."""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from typing import Any

from tracer_assets.trading.paper import PaperBroker


def _encode(value: Any) -> Any:
    if isinstance(value, Decimal):
        return {"$decimal": str(value)}
    if isinstance(value, datetime):
        return {"$datetime": value.isoformat()}
    raise TypeError(f"cannot store {type(value).__name__} in the paper state")


def _decode(obj: dict) -> Any:
    if obj.keys() == {"$decimal"}:
        return Decimal(obj["$decimal"])
    if obj.keys() == {"$datetime"}:
        return datetime.fromisoformat(obj["$datetime"])
    return obj


def dump_broker(broker: PaperBroker) -> str:
    return json.dumps(broker.snapshot(), default=_encode, sort_keys=True)


def load_broker(document: str) -> PaperBroker:
    return PaperBroker.restore(json.loads(document, object_hook=_decode))
