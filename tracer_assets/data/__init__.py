"""The bundled real candles (see binance_spot_2024/README.md for provenance)."""

from pathlib import Path

BUNDLED_REPLAY_DIR = Path(__file__).parent / "binance_spot_2024"
