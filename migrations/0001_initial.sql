-- One schema for Postgres and SQLite: only portable types (see docs/architecture.md §storage).
-- ids and JSON are TEXT, times BIGINT epoch-ms, flags INTEGER 0/1, encrypted secrets and
-- hashes BYTEA (SQLite stores the blob as given).

-- Bumped in the same transaction as every configuration write; instances poll it to know
-- when to reload (one row, so a poll is a primary-key read).
CREATE TABLE config_version (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    version BIGINT NOT NULL
);
INSERT INTO config_version (id, version) VALUES (1, 0);

CREATE TABLE sip_peers (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    enabled INTEGER NOT NULL,
    transport TEXT NOT NULL,
    addresses TEXT NOT NULL,
    allow_list TEXT NOT NULL,
    inbound_username TEXT,
    inbound_password BYTEA,
    outbound_username TEXT,
    outbound_password BYTEA,
    registration TEXT NOT NULL,
    dtmf_mode TEXT NOT NULL,
    codecs TEXT NOT NULL,
    srtp TEXT NOT NULL,
    number_rules TEXT NOT NULL,
    max_cps BIGINT,
    max_concurrent BIGINT,
    options_interval_s BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE ript_upstreams (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    enabled INTEGER NOT NULL,
    root_url TEXT NOT NULL,
    trunk_group TEXT NOT NULL,
    auth_kind TEXT NOT NULL,
    auth_params TEXT NOT NULL,
    auth_secret BYTEA,
    trust_anchors_pem TEXT,
    client_cert_pem TEXT,
    client_key_pem BYTEA,
    media_mode TEXT NOT NULL,
    media_key BYTEA,
    max_cps BIGINT,
    max_concurrent BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE hosted_tgs (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    name TEXT NOT NULL,
    enabled INTEGER NOT NULL,
    vouched_numbers TEXT NOT NULL,
    destination_pattern TEXT NOT NULL,
    advertisement TEXT NOT NULL,
    customer_tgs TEXT NOT NULL,
    customer_tg_tokens BYTEA,
    max_cps BIGINT,
    max_concurrent BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (tenant, name)
);

-- A customer's bearer tokens and OAuth clients; only SHA-256 hashes are kept.
CREATE TABLE customer_credentials (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    hosted_tg_id TEXT NOT NULL REFERENCES hosted_tgs (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    client_id TEXT UNIQUE,
    secret_hash BYTEA NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (tenant, name)
);

CREATE TABLE numbers (
    id TEXT PRIMARY KEY,
    tenant TEXT,
    first_number TEXT NOT NULL UNIQUE,
    last_number TEXT,
    owner_kind TEXT NOT NULL,
    owner_id TEXT NOT NULL,
    vouch INTEGER NOT NULL,
    description TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX numbers_owner ON numbers (owner_kind, owner_id);

CREATE TABLE routes (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    enabled INTEGER NOT NULL,
    priority BIGINT NOT NULL,
    source_kind TEXT NOT NULL,
    source_id TEXT NOT NULL,
    destination_pattern TEXT NOT NULL,
    caller_pattern TEXT,
    targets TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX routes_source ON routes (source_kind, source_id);

CREATE TABLE admin_tokens (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    token_hash BYTEA NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- Live calls: a snapshot per call, upserted on every state change by the owning instance.
CREATE TABLE calls (
    id TEXT PRIMARY KEY,
    instance_id TEXT NOT NULL,
    state TEXT NOT NULL,
    sip_call_id TEXT,
    ript_call_id TEXT,
    cookies TEXT NOT NULL,
    sip_leg TEXT NOT NULL,
    ript_leg TEXT NOT NULL,
    revision BIGINT NOT NULL,
    started_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX calls_instance ON calls (instance_id);

CREATE TABLE cdrs (
    id TEXT PRIMARY KEY,
    call_id TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    answered_at BIGINT,
    ended_at BIGINT NOT NULL,
    duration_ms BIGINT NOT NULL,
    caller TEXT NOT NULL,
    callee TEXT NOT NULL,
    source_kind TEXT NOT NULL,
    source_id TEXT NOT NULL,
    target_kind TEXT,
    target_id TEXT,
    route_id TEXT,
    sip_call_id TEXT,
    ript_call_id TEXT,
    sip_codec TEXT,
    ript_codec TEXT,
    sip_status BIGINT,
    ript_reason TEXT,
    media TEXT NOT NULL
);
CREATE INDEX cdrs_started ON cdrs (started_at, id);
CREATE INDEX cdrs_caller ON cdrs (caller);
CREATE INDEX cdrs_callee ON cdrs (callee);
CREATE INDEX cdrs_source ON cdrs (source_id);
CREATE INDEX cdrs_target ON cdrs (target_id);
