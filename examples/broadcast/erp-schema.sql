-- The ERP's sales orders, filled by the Closed Won broadcast.
CREATE TABLE IF NOT EXISTS sales_orders (
    opportunity_id  varchar(18) PRIMARY KEY,
    title           varchar(120) NOT NULL,
    amount          numeric(16, 2) NOT NULL,
    account_id      varchar(18),
    account_name    varchar(255),
    close_date      date
);
