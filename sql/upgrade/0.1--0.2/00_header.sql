-- loyalty 0.1 -> 0.2. Assembled from sql/upgrade/0.1--0.2/*.sql, one fragment
-- per change, in file-name order. Every change to sql/install/ since 0.1 has
-- its counterpart here; the regression test "upgrade" checks that an upgraded
-- database ends with the same schema as a fresh install.
\echo Use "ALTER EXTENSION loyalty UPDATE TO '0.2'" to load this file. \quit
