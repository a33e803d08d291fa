-- The north hospital's patient register (PostgreSQL). A trigger keeps updated_at, so the
-- correlation's own writes come back as changes and are recognised as echoes.
CREATE TABLE patients (
    mrn TEXT PRIMARY KEY,
    given_name TEXT,
    family_name TEXT,
    birth_date DATE,
    postcode TEXT,
    address TEXT,
    phone TEXT,
    allergies TEXT,
    gp TEXT,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX patients_updated ON patients (updated_at, mrn);
CREATE FUNCTION patients_stamp() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := clock_timestamp();
    RETURN NEW;
END $$;
CREATE TRIGGER patients_stamp BEFORE UPDATE ON patients
    FOR EACH ROW EXECUTE FUNCTION patients_stamp();
