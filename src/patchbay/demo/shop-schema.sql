-- The web shop's customers. A trigger keeps updated_at, so the sync's own writes come
-- back as changes and are recognised as echoes.
CREATE TABLE customers (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    company TEXT NOT NULL,
    sector TEXT,
    phone TEXT,
    patchbay_id TEXT UNIQUE,
    updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f', 'now'))
);
CREATE TRIGGER customers_stamp AFTER UPDATE ON customers BEGIN
    UPDATE customers SET updated_at = strftime('%Y-%m-%dT%H:%M:%f', 'now') WHERE id = NEW.id;
END;
