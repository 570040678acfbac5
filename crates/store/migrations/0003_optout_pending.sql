-- Opt-outs added through the control API while their audit record is made durable beside
-- the store's commit: kept, in the same transaction as the opt-out, until the audit record
-- is known durable; after a crash between the two, the node that wrote it (its log: `log`)
-- writes the audit record its log lacks at its next start. The numbers are in clear, as in
-- the log, for that record; a row lives for the milliseconds between the two commits.
CREATE TABLE crieur_optouts_pending (
    ticket  text COLLATE "C" PRIMARY KEY,
    log     text NOT NULL,
    numbers text[] NOT NULL,
    at_us   bigint NOT NULL,
    source  text NOT NULL
);
CREATE INDEX crieur_optouts_pending_log ON crieur_optouts_pending (log, at_us);
