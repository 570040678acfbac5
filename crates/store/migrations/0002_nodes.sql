-- The nodes working on each campaign, with when each was last seen (its last refill): the
-- campaign's pacing is shared among the nodes seen recently.
CREATE TABLE crieur_nodes (
    campaign text COLLATE "C" NOT NULL,
    node     text NOT NULL,
    seen_us  bigint NOT NULL,
    PRIMARY KEY (campaign, node)
);
