-- The ERP's customers and orders (MariaDB / MySQL). updated_at is maintained by the
-- database (ON UPDATE), so the sync's own writes come back as changes and are recognised
-- as echoes, and patchbay_id holds the sync's global id.
CREATE TABLE customers (
    id INTEGER AUTO_INCREMENT PRIMARY KEY,
    customer_name VARCHAR(255) NOT NULL,
    sector VARCHAR(8),
    patchbay_id VARCHAR(32) UNIQUE,
    updated_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6)
);
CREATE TABLE orders (
    order_no INTEGER AUTO_INCREMENT PRIMARY KEY,
    customer_id INTEGER REFERENCES customers (id),
    title VARCHAR(120) NOT NULL,
    status VARCHAR(12) NOT NULL,
    total DECIMAL(16, 2),
    due_date DATE NOT NULL,
    patchbay_id VARCHAR(32) UNIQUE,
    updated_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6)
);
