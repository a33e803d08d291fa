-- The PostgreSQL copy of the org's accounts and contacts. No change stamp is needed: the
-- sync follows the tables through change capture (`patchbay cdc install`).
CREATE TABLE account (
    id SERIAL PRIMARY KEY,
    name TEXT NOT NULL,
    industry TEXT,
    phone TEXT,
    patchbay_id TEXT UNIQUE
);
CREATE TABLE contact (
    id SERIAL PRIMARY KEY,
    account_id INTEGER REFERENCES account (id) ON DELETE SET NULL,
    first_name TEXT,
    last_name TEXT NOT NULL,
    email TEXT,
    patchbay_id TEXT UNIQUE
);
