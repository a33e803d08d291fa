-- The ERP's customers and orders, and the support desk's tickets (any SQL database).
CREATE TABLE customers (customer_id VARCHAR(20) PRIMARY KEY, company VARCHAR(120) NOT NULL,
                        email VARCHAR(120), phone VARCHAR(40), updated_at TIMESTAMP);
CREATE TABLE orders (order_id VARCHAR(20) PRIMARY KEY, customer_id VARCHAR(20) NOT NULL,
                     amount NUMERIC(12, 2) NOT NULL, ordered_at DATE NOT NULL);
CREATE TABLE tickets (ticket_id VARCHAR(20) PRIMARY KEY, requester_email VARCHAR(120),
                      subject VARCHAR(200), status VARCHAR(20) NOT NULL, opened_at TIMESTAMP);
