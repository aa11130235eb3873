"""Versioned schema. Each entry upgrades the database by one version; never edit a
released entry, append a new one. `PRAGMA user_version` holds the applied version."""

MIGRATIONS: list[str] = [
    # 1: calls, legs, registrar bindings
    """
    CREATE TABLE calls (
        id          TEXT PRIMARY KEY,
        started     REAL NOT NULL,
        answered    REAL,
        ended       REAL,
        caller      TEXT NOT NULL,
        callee      TEXT NOT NULL,
        kind        TEXT NOT NULL,            -- 'internal' for now; later 'inbound', 'outbound'
        result      TEXT,                     -- answered / busy / no-answer / unavailable /
                                              -- not-found / cancelled / failed
        cause       TEXT,                     -- free text: who hung up, why it failed
        sip_code    INTEGER
    );
    CREATE INDEX calls_started ON calls(started);
    CREATE TABLE legs (
        id          TEXT PRIMARY KEY,
        call_id     TEXT NOT NULL REFERENCES calls(id),
        role        TEXT NOT NULL,            -- 'caller' or 'callee'
        party       TEXT NOT NULL,            -- extension number or remote URI
        worker      INTEGER,
        sip_call_id TEXT,
        started     REAL NOT NULL,
        answered    REAL,
        ended       REAL,
        result      TEXT,
        sip_code    INTEGER,
        cause       TEXT,
        rx_packets  INTEGER,
        rx_lost     INTEGER,
        tx_packets  INTEGER
    );
    CREATE INDEX legs_call ON legs(call_id);
    CREATE TABLE bindings (
        aor         TEXT NOT NULL,            -- extension number
        contact     TEXT NOT NULL,            -- Contact URI as the phone sent it
        expires     REAL NOT NULL,            -- absolute unix time
        transport   TEXT NOT NULL,            -- 'udp' or 'tcp'
        source_host TEXT NOT NULL,            -- where the REGISTER came from (NAT fix)
        source_port INTEGER NOT NULL,
        call_id     TEXT NOT NULL,
        cseq        INTEGER NOT NULL,
        q           REAL,
        user_agent  TEXT,
        updated     REAL NOT NULL,
        PRIMARY KEY (aor, contact)
    );
    """,
]
