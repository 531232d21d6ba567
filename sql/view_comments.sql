-- Every view of the extension and every column of it has a COMMENT: BI tools
-- show them, and the README promises them. A view or column added without
-- one is listed here (and the expected output has none).
SET client_min_messages = warning;
DROP EXTENSION loyalty CASCADE;
CREATE EXTENSION loyalty;

-- views without a comment
SELECT c.relname AS view
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = 'loyalty' AND c.relkind IN ('v', 'm') AND obj_description(c.oid, 'pg_class') IS NULL
 ORDER BY 1;

-- view columns without a comment
SELECT c.relname AS view, a.attname AS column
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
 WHERE n.nspname = 'loyalty' AND c.relkind IN ('v', 'm') AND col_description(c.oid, a.attnum) IS NULL
 ORDER BY 1, 2;

-- the queries above look at the extension's views (a wrong schema or relkind
-- would list nothing and pass): it has views, all of them members
SELECT count(*) >= 20 AS has_views,
       bool_and(EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                          AND d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e')) AS all_members
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = 'loyalty' AND c.relkind = 'v';
