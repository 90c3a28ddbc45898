-- Application services: how far each has been sent the events stream, and the
-- transactions made but not yet acknowledged. A transaction row and the new
-- position are written together, so a restart resends exactly what was not
-- acknowledged, under the same transaction id (the service drops repeats).
CREATE TABLE appservice_position (
    as_id TEXT PRIMARY KEY,
    stream_position BIGINT NOT NULL,
    last_txn_id BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE appservice_txns (
    as_id TEXT NOT NULL,
    txn_id BIGINT NOT NULL,
    event_ids TEXT NOT NULL,  -- a JSON list, in stream order
    PRIMARY KEY (as_id, txn_id)
);
