-- The seed's demo tables, created when the Postgres container starts for the first time.
CREATE TABLE demo_table1 (id int PRIMARY KEY, value text);
CREATE TABLE demo_table2 (id int PRIMARY KEY, value text);
INSERT INTO demo_table1 VALUES (1, 'alpha'), (2, 'beta'), (3, 'gamma');
INSERT INTO demo_table2 VALUES (1, 'original'), (2, 'kept');
