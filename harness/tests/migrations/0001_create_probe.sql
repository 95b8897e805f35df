-- A small schema for the test that sqlx connects and migrates.
CREATE TABLE probe_events (
    event_id   TEXT PRIMARY KEY,
    value      DOUBLE PRECISION NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
