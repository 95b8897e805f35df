-- The fleet's schema: every table a worker writes, keyed so that a replayed
-- batch writes the same rows again instead of new ones (idempotent writes).

-- data-ingestor: validated, unit-normalised telemetry. `published` is the
-- outbox flag: set once the row's event is acknowledged on
-- telemetry.normalized, so a replay republishes exactly the rows a crash
-- left unpublished, and an agent's resent event is dropped.
CREATE TABLE measurements (
    event_id    TEXT PRIMARY KEY,
    entity      TEXT NOT NULL,
    site        TEXT NOT NULL,
    service     TEXT NOT NULL,
    metric      TEXT NOT NULL,
    unit        TEXT NOT NULL,
    value       DOUBLE PRECISION NOT NULL,
    is_error    BOOLEAN NOT NULL,
    event_time  TIMESTAMPTZ NOT NULL,
    ingested_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    published   BOOLEAN NOT NULL DEFAULT false
);
CREATE INDEX measurements_event_time ON measurements (event_time);

-- kpi-worker: event-time tumbling windows per entity and metric.
CREATE TABLE kpi_windows (
    window_id    TEXT PRIMARY KEY,
    entity       TEXT NOT NULL,
    site         TEXT NOT NULL,
    service      TEXT NOT NULL,
    metric       TEXT NOT NULL,
    window_start TIMESTAMPTZ NOT NULL,
    window_end   TIMESTAMPTZ NOT NULL,
    count        BIGINT NOT NULL,
    mean         DOUBLE PRECISION NOT NULL,
    min          DOUBLE PRECISION NOT NULL,
    max          DOUBLE PRECISION NOT NULL,
    p95          DOUBLE PRECISION NOT NULL,
    error_rate   DOUBLE PRECISION NOT NULL,
    published    BOOLEAN NOT NULL DEFAULT false,
    -- when the window was written (wall clock): what `fleetbench run`
    -- measures the end-to-end latency of the events in it against.
    written_at   TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX kpi_windows_series ON kpi_windows (entity, metric, window_start);
CREATE INDEX kpi_windows_unpublished ON kpi_windows (window_id) WHERE NOT published;

-- kpi-worker's progress per series: the latest event time seen and the
-- end of the last closed window, advanced in the same transaction as the
-- windows it closes.
CREATE TABLE kpi_progress (
    entity          TEXT NOT NULL,
    metric          TEXT NOT NULL,
    max_event_ms    BIGINT NOT NULL,
    closed_until_ms BIGINT NOT NULL,
    PRIMARY KEY (entity, metric)
);

-- model-trainer: per-series models, versioned.
CREATE TABLE anomaly_models (
    series_key   TEXT NOT NULL,
    version      INTEGER NOT NULL,
    trained_at   TIMESTAMPTZ NOT NULL,
    sample_count BIGINT NOT NULL,
    parameters   JSONB NOT NULL,
    PRIMARY KEY (series_key, version)
);

-- anomaly-detector: scored windows that crossed the threshold. `expected`
-- is what the model or history predicted; `published` is the outbox flag,
-- set once the anomaly is acknowledged on the anomalies topic.
CREATE TABLE anomalies (
    window_id     TEXT PRIMARY KEY REFERENCES kpi_windows (window_id),
    series_key    TEXT NOT NULL,
    entity        TEXT NOT NULL,
    site          TEXT NOT NULL,
    service       TEXT NOT NULL,
    metric        TEXT NOT NULL,
    window_start  TIMESTAMPTZ NOT NULL,
    value         DOUBLE PRECISION NOT NULL,
    expected      DOUBLE PRECISION NOT NULL,
    score         DOUBLE PRECISION NOT NULL,
    method        TEXT NOT NULL,
    model_version INTEGER,
    published     BOOLEAN NOT NULL DEFAULT false
);
CREATE INDEX anomalies_unpublished ON anomalies (window_id) WHERE NOT published;

-- forecaster: predicted next windows and capacity breaches, one row per
-- (window forecast from, predicted window). `published` is the outbox flag
-- of breaching forecasts: set once the forecast is acknowledged on the
-- forecasts topic (forecasts without a breach are never published).
CREATE TABLE forecasts (
    forecast_id    TEXT PRIMARY KEY,
    series_key     TEXT NOT NULL,
    entity         TEXT NOT NULL,
    site           TEXT NOT NULL,
    service        TEXT NOT NULL,
    metric         TEXT NOT NULL,
    made_from      TEXT NOT NULL REFERENCES kpi_windows (window_id),
    target_start   TIMESTAMPTZ NOT NULL,
    predicted      DOUBLE PRECISION NOT NULL,
    capacity       DOUBLE PRECISION,
    breach         BOOLEAN NOT NULL,
    published      BOOLEAN NOT NULL DEFAULT false
);
CREATE INDEX forecasts_unpublished ON forecasts (forecast_id) WHERE breach AND NOT published;

-- alert-manager: alerts after severity rules, suppression and flap damping.
-- `state` is what became of the alert (notified, suppressed as a repeat of
-- an open episode, or held because its key flaps); `held` counts, on a
-- notified alert, the flapping episodes held since the key's previous
-- notification; `seq` orders the alerts of one (kind, entity, metric) as
-- they were decided; `published` is the outbox flag of the alerts and
-- alerts.notifications topics.
CREATE TABLE alerts (
    alert_id    TEXT PRIMARY KEY,
    source_id   TEXT NOT NULL,
    kind        TEXT NOT NULL,
    entity      TEXT NOT NULL,
    site        TEXT NOT NULL,
    service     TEXT NOT NULL,
    metric      TEXT NOT NULL,
    severity    TEXT NOT NULL CHECK (severity IN ('warning', 'critical')),
    raised_at   TIMESTAMPTZ NOT NULL,
    summary     TEXT NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('notified', 'suppressed', 'flapping')),
    held        BIGINT NOT NULL DEFAULT 0,
    seq         BIGINT NOT NULL,
    published   BOOLEAN NOT NULL DEFAULT false,
    UNIQUE (kind, entity, metric, seq)
);
CREATE INDEX alerts_site_service ON alerts (site, service, raised_at);
CREATE INDEX alerts_unpublished ON alerts (alert_id) WHERE NOT published;

-- incident-correlator: alerts grouped by time and topology.
CREATE TABLE incidents (
    incident_id TEXT PRIMARY KEY,
    site        TEXT NOT NULL,
    service     TEXT NOT NULL,
    opened_at   TIMESTAMPTZ NOT NULL,
    last_at     TIMESTAMPTZ NOT NULL,
    severity    TEXT NOT NULL
);
CREATE INDEX incidents_site_service ON incidents (site, service);
CREATE TABLE incident_alerts (
    incident_id TEXT NOT NULL REFERENCES incidents (incident_id),
    alert_id    TEXT NOT NULL REFERENCES alerts (alert_id),
    PRIMARY KEY (incident_id, alert_id)
);

-- sla-reporter: SLO compliance and error-budget burn per service and UTC
-- day, from the service's latency windows (requests = measurements), with
-- the targets the day was assessed against.
CREATE TABLE sla_reports (
    service               TEXT NOT NULL,
    day                   DATE NOT NULL,
    windows               BIGINT NOT NULL,
    requests              BIGINT NOT NULL,
    errors                BIGINT NOT NULL,
    availability          DOUBLE PRECISION NOT NULL,
    latency_p95_ms        DOUBLE PRECISION NOT NULL,
    availability_target   DOUBLE PRECISION NOT NULL,
    latency_p95_target_ms DOUBLE PRECISION NOT NULL,
    availability_met      BOOLEAN NOT NULL,
    latency_met           BOOLEAN NOT NULL,
    error_budget_burn     DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (service, day)
);

-- retention-compactor: hourly rollups of raw measurements past retention.
CREATE TABLE measurements_hourly (
    entity  TEXT NOT NULL,
    metric  TEXT NOT NULL,
    hour    TIMESTAMPTZ NOT NULL,
    count   BIGINT NOT NULL,
    sum     DOUBLE PRECISION NOT NULL,
    min     DOUBLE PRECISION NOT NULL,
    max     DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (entity, metric, hour)
);
