-- The new CRM's tables (the destination of the legacy CRM migration), for SQLite.
CREATE TABLE IF NOT EXISTS accounts (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    legacy_id      INTEGER NOT NULL UNIQUE,
    name           VARCHAR(255) NOT NULL,
    industry       VARCHAR(40),
    country        VARCHAR(2),
    city           VARCHAR(80),
    employees      INTEGER,
    annual_revenue NUMERIC(18, 2),
    phone          VARCHAR(40),
    website        VARCHAR(255),
    status         VARCHAR(20) NOT NULL,
    source_system  VARCHAR(20) NOT NULL,
    created_at     TIMESTAMP,
    updated_at     TIMESTAMP
);

CREATE TABLE IF NOT EXISTS contacts (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    legacy_id     INTEGER NOT NULL UNIQUE,
    account_id    INTEGER NOT NULL REFERENCES accounts (id),
    first_name    VARCHAR(80),
    last_name     VARCHAR(80) NOT NULL,
    email         VARCHAR(255) UNIQUE,
    phone         VARCHAR(40),
    title         VARCHAR(120),
    country       VARCHAR(2),
    birthdate     DATE,
    email_opt_in  BOOLEAN,
    created_at    TIMESTAMP,
    updated_at    TIMESTAMP
);
