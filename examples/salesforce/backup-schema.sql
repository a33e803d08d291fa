-- The PostgreSQL backup table of Salesforce contacts.
CREATE TABLE IF NOT EXISTS customer_master_contacts (
    salesforce_id  varchar(18) PRIMARY KEY,
    first_name     varchar(40),
    last_name      varchar(80) NOT NULL,
    email          varchar(80),
    phone          varchar(40),
    title          varchar(128),
    country        varchar(80),
    birthdate      date,
    account_id     varchar(18),
    account_name   varchar(255),
    modified_at    timestamptz NOT NULL
);
