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
    # 2: voicemail messages and the durable e-mail outbox
    """
    CREATE TABLE voicemail (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        box         TEXT NOT NULL,
        caller      TEXT NOT NULL,
        caller_name TEXT,
        call_id     TEXT,                     -- calls.id; NULL when adopted by recover()
        received    REAL NOT NULL,            -- unix time the message was left
        seconds     REAL NOT NULL,
        path        TEXT NOT NULL UNIQUE,     -- WAV, relative to the data directory
        heard       INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX voicemail_box ON voicemail(box, received);
    CREATE TABLE outbox (
        id           INTEGER PRIMARY KEY AUTOINCREMENT,
        kind         TEXT NOT NULL DEFAULT 'email',
        recipient    TEXT NOT NULL,
        sender       TEXT,                    -- NULL: [switch.smtp] from at send time
        subject      TEXT NOT NULL,
        body_text    TEXT NOT NULL,
        body_html    TEXT,
        attachment   TEXT,                    -- file relative to the data directory
        voicemail_id INTEGER REFERENCES voicemail(id),
        message_id   TEXT NOT NULL UNIQUE,    -- fixed when queued: a resend is the same mail
        created      REAL NOT NULL,
        attempts     INTEGER NOT NULL DEFAULT 0,
        next_attempt REAL NOT NULL,
        last_attempt REAL,
        last_error   TEXT,
        sent         REAL                     -- NULL until the server accepted it
    );
    CREATE INDEX outbox_due ON outbox(next_attempt) WHERE sent IS NULL;
    """,
    # 3: the queue log (one row per ACD QueueEvent) and operators' wishes that survive
    # a restart (logged out by API / feature code, paused with a reason)
    """
    CREATE TABLE queue_log (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        time        REAL NOT NULL,            -- unix time of the event
        kind        TEXT NOT NULL,            -- joined / ring / late_answer / connected /
                                              -- completed / abandoned / left / wrap_up_start /
                                              -- wrap_up_end / login / logout / pause / unpause
        queue       TEXT,
        caller      TEXT,                     -- calls.id of the caller's call
        number      TEXT,                     -- the caller's number (calls.caller), for reports
        agent       TEXT,                     -- operator (extension number)
        result      TEXT,
        reason      TEXT,
        code        INTEGER,
        position    INTEGER,
        priority    INTEGER,
        wait        REAL,
        ring_start  REAL,
        ring_time   REAL,
        talk_time   REAL,
        duration    REAL,
        target      TEXT,
        attempts    TEXT                      -- JSON list of {agent, start, seconds, result}
    );
    CREATE INDEX queue_log_time ON queue_log(time);
    CREATE INDEX queue_log_caller ON queue_log(caller);
    CREATE INDEX queue_log_agent ON queue_log(agent, time);
    CREATE TABLE agent_status (
        agent        TEXT PRIMARY KEY,
        logged_out   INTEGER NOT NULL DEFAULT 0,  -- 1: logged out by API / feature code
        pause_reason TEXT,                        -- NULL: not paused
        updated      REAL NOT NULL
    );
    """,
    # 4: call recordings (softswitch/recording.py; a table, not a column of calls: one
    # call may have several, toggled on and off) and how long phones held their legs
    """
    CREATE TABLE recordings (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        call_id     TEXT NOT NULL REFERENCES calls(id),
        legs        TEXT NOT NULL,            -- the legs mixed into it, "CALL-a,CALL-b"
        path        TEXT NOT NULL UNIQUE,     -- WAV, relative to the data directory
        started     REAL NOT NULL,            -- written when recording starts
        ended       REAL,                     -- NULL while it runs (or until the next start
                                              -- after a crash)
        seconds     REAL,
        started_by  TEXT NOT NULL,            -- 'always' or the extension that pressed the
                                              -- in-call code (on-demand)
        reason      TEXT                      -- why it ended: hangup / unbridged /
                                              -- stopped by EXT / interrupted / switch stopped
    );
    CREATE INDEX recordings_call ON recordings(call_id);
    CREATE INDEX recordings_started ON recordings(started);
    ALTER TABLE legs ADD COLUMN held REAL;    -- seconds the leg's phone held the call
    ALTER TABLE legs ADD COLUMN holds INTEGER; -- times it put the call on hold
    """,
]
