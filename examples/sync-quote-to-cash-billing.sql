-- The billing system's accounts (PostgreSQL). A trigger keeps modified_at, so the sync's
-- own writes come back as changes and are recognised as echoes.
CREATE TABLE billing_accounts (
    account_id SERIAL PRIMARY KEY,
    legal_name TEXT NOT NULL,
    credit_class TEXT,
    patchbay_id TEXT UNIQUE,
    modified_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);
CREATE FUNCTION billing_accounts_stamp() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.modified_at := clock_timestamp();
    RETURN NEW;
END $$;
CREATE TRIGGER billing_accounts_stamp BEFORE UPDATE ON billing_accounts
    FOR EACH ROW EXECUTE FUNCTION billing_accounts_stamp();
