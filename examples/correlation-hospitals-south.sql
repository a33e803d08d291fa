-- The south hospital's register (MariaDB / MySQL). modified is maintained by the database
-- (ON UPDATE), so the correlation's own writes come back as changes and are recognised as
-- echoes.
CREATE TABLE persons (
    person_no INTEGER AUTO_INCREMENT PRIMARY KEY,
    first_name VARCHAR(80),
    surname VARCHAR(80),
    dob DATE,
    post_code VARCHAR(10),
    street VARCHAR(120),
    mobile VARCHAR(32),
    allergy_notes VARCHAR(255),
    primary_care VARCHAR(255),
    modified TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6),
    INDEX persons_modified (modified, person_no)
);
