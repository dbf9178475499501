"""signal_sensor: one decision run per signals/signals materialization.

A plain @sensor rather than asset_sensor: asset_sensor folds several materializations into
one run (docs/architecture.md). The cursor is the newest storage id answered; it is stored by the
daemon, so a restart neither repeats nor skips an event, and the run key (from the storage
id) makes Dagster drop a request it has seen before.
"""

import dagster as dg

from tracer_assets.signals.keys import SIGNALS_KEY
from tracer_assets.trading.keys import SIGNAL_STORAGE_TAG

DECISION_JOB = "decision_job"
MAX_EVENTS_PER_TICK = 50


def build_decision_job(trading_keys):
    return dg.define_asset_job(
        DECISION_JOB,
        selection=dg.AssetSelection.assets(*trading_keys),
        description=(
            "Decide on one signals materialization, size it under the risk manager, execute it (paper by default)."
        ),
    )


def build_signal_sensor(decision_job) -> dg.SensorDefinition:
    @dg.sensor(
        name="signal_sensor",
        job=decision_job,
        # The sensor daemon loops every 5 s; a minimum of 5 s skips a loop that comes round a
        # hair early (the tick's start is the reference), doubling a signal's wait to 10 s.
        minimum_interval_seconds=1,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Launches decision_job once per signals/signals materialization (run key = its storage id).",
    )
    def signal_sensor(context: dg.SensorEvaluationContext):
        if context.cursor:
            records = context.instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=SIGNALS_KEY, after_storage_id=int(context.cursor)),
                limit=MAX_EVENTS_PER_TICK,
                ascending=True,
            ).records
        else:
            # First start: answer the newest signals only; older ones are history, not news.
            records = context.instance.fetch_materializations(SIGNALS_KEY, limit=1).records
        if not records:
            return dg.SkipReason("no new signals/signals materialization")
        return dg.SensorResult(
            run_requests=[
                dg.RunRequest(run_key=f"signals:{r.storage_id}", tags={SIGNAL_STORAGE_TAG: str(r.storage_id)})
                for r in records
            ],
            cursor=str(records[-1].storage_id),
        )

    return signal_sensor
