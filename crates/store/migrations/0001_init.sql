-- crieur-store on PostgreSQL, version 1. Applied once by `PgStore::open` (recorded in
-- crieur_migrations), under an advisory lock so that several nodes opening a new database
-- at once apply it once. Text keys sort by bytes (COLLATE "C"), as in the sled store.
-- Instants are microseconds since the Unix epoch (bigint), as in
-- the sled store, so that both backends compare exactly the same values.

-- Format marker and the 32-byte key of the opt-out list's keyed hashes (HMAC-SHA-256).
CREATE TABLE crieur_meta (
    name  text PRIMARY KEY,
    value bytea NOT NULL
);

-- Contacts with their whole consent history. `record` is the contact as the sled store
-- keeps it (postcard: id, phone, zone, every consent record ever imported, in import
-- order); imports only ever append consent records to it.
-- The due index: `due_us` is the next instant the contact may be due (NULL: never again —
-- done); `claimed_by` / `claim_until_us` say which node took it into its planner, until
-- when (taken with FOR UPDATE SKIP LOCKED, so two nodes never take the same contact).
CREATE TABLE crieur_contacts (
    campaign       text COLLATE "C" NOT NULL,
    id             text COLLATE "C" NOT NULL,
    record         bytea  NOT NULL,
    due_us         bigint,
    claimed_by     text,
    claim_until_us bigint,
    PRIMARY KEY (campaign, id)
);
CREATE INDEX crieur_contacts_due ON crieur_contacts (campaign, due_us) WHERE due_us IS NOT NULL;

-- Counters per campaign, changed in the same transaction as the due instants they count:
-- `remaining` contacts have a due instant, `done` ones have none. A campaign has a row once
-- it has contacts (the list of campaigns).
CREATE TABLE crieur_progress (
    campaign  text COLLATE "C" PRIMARY KEY,
    remaining bigint NOT NULL,
    done      bigint NOT NULL
);

-- The global opt-out list: HMAC-SHA-256(opt-out key, E.164 number) → when and how. The
-- number itself is never stored.
CREATE TABLE crieur_optouts (
    number_hash bytea  PRIMARY KEY,
    at_s        bigint NOT NULL,
    source      text   NOT NULL
);

-- Leases: a call being placed (or, after a crash, that was). `node` names the process that
-- took it: another node recovers it only after the lease timeout.
CREATE TABLE crieur_leases (
    campaign    text COLLATE "C" NOT NULL,
    contact     text COLLATE "C" NOT NULL,
    at_us       bigint NOT NULL,
    number_hash bytea  NOT NULL,
    call        text   NOT NULL,
    node        text   NOT NULL,
    PRIMARY KEY (campaign, contact)
);

-- Attempts per number across campaigns (the rolling caps read them).
CREATE TABLE crieur_attempts (
    seq         bigserial PRIMARY KEY,
    number_hash bytea  NOT NULL,
    started_us  bigint NOT NULL,
    ended_us    bigint NOT NULL,
    campaign    text   NOT NULL,
    contact     text   NOT NULL,
    outcome     text   NOT NULL,
    call        text   NOT NULL
);
CREATE INDEX crieur_attempts_number ON crieur_attempts (number_hash, started_us, seq);
