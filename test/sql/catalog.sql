-- The schema of the installed loyalty extension as comparable text rows
-- (kind, object, definition), for the upgrade test: an upgraded database and
-- a fresh install of the same version must list the same rows. Everything in
-- schema loyalty is listed by definition (no OIDs), with grants (in a fixed
-- order: the order of grants is not meaningful) and comments.
-- Include with \i; defines pg_temp.loyalty_catalog().
CREATE FUNCTION pg_temp.loyalty_catalog()
RETURNS TABLE (kind text, object text, definition text)
LANGUAGE sql
AS $fn$
WITH ns AS (SELECT oid FROM pg_namespace WHERE nspname = 'loyalty'),
ext AS (SELECT oid, extconfig, extcondition FROM pg_extension WHERE extname = 'loyalty'),
rel AS (SELECT c.* FROM pg_class c, ns WHERE c.relnamespace = ns.oid)
-- every member of the extension, whatever its kind (operators, casts, event triggers too)
SELECT 'member', pg_describe_object(d.classid, d.objid, d.objsubid), ''
  FROM pg_depend d, ext WHERE d.refclassid = 'pg_extension'::regclass AND d.refobjid = ext.oid AND d.deptype = 'e'
UNION ALL
-- functions and procedures: full definition (body, volatility, security, settings), grants, comment
SELECT 'function', p.oid::regprocedure::text,
       concat_ws(E'\n', CASE WHEN p.prokind = 'a' THEN NULL ELSE pg_get_functiondef(p.oid) END,
                 'kind=' || p.prokind::text, 'parallel=' || p.proparallel::text, 'leakproof=' || p.proleakproof,
                 'cost=' || p.procost, 'rows=' || p.prorows, 'acl=' || coalesce((SELECT array_agg(x::text ORDER BY x::text) FROM unnest(p.proacl) x)::text, '-'),
                 'owner_is_superuser=' || (SELECT rolsuper FROM pg_roles WHERE oid = p.proowner),
                 'comment=' || coalesce(obj_description(p.oid, 'pg_proc'), '-'))
  FROM pg_proc p, ns WHERE p.pronamespace = ns.oid
UNION ALL
SELECT 'aggregate', a.aggfnoid::regprocedure::text,
       concat_ws(' ', a.aggkind::text, a.aggtransfn::regprocedure, a.aggfinalfn, a.aggcombinefn, a.aggserialfn,
                 a.aggdeserialfn, a.aggtranstype::regtype, a.aggtransspace, a.agginitval, a.aggfinalextra,
                 a.aggfinalmodify::text, a.aggmtransfn, a.aggminvtransfn, a.aggmfinalfn, a.aggsortop)
  FROM pg_aggregate a JOIN pg_proc p ON p.oid = a.aggfnoid, ns WHERE p.pronamespace = ns.oid
UNION ALL
-- relations: kind, persistence, options, grants, comment, row security
SELECT 'relation', c.relname,
       concat_ws(' ', c.relkind::text, c.relpersistence::text, c.reloptions::text, 'rls=' || c.relrowsecurity,
                 'acl=' || coalesce((SELECT array_agg(x::text ORDER BY x::text) FROM unnest(c.relacl) x)::text, '-'), 'comment=' || coalesce(obj_description(c.oid, 'pg_class'), '-'))
  FROM rel c WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f', 'c')
UNION ALL
-- columns in their order (dropped columns left out), with type, default, nullability, grants, comment
SELECT 'column', c.relname || '.' || a.attname,
       concat_ws(' ', rank() OVER (PARTITION BY c.oid ORDER BY a.attnum), format_type(a.atttypid, a.atttypmod),
                 CASE WHEN a.attnotnull THEN 'not null' END, 'default=' || pg_get_expr(ad.adbin, ad.adrelid),
                 nullif(a.attidentity::text, ''), nullif(a.attgenerated::text, ''),
                 CASE WHEN a.attcollation <> 0 THEN 'collate=' || a.attcollation::regcollation END,
                 'acl=' || coalesce((SELECT array_agg(x::text ORDER BY x::text) FROM unnest(a.attacl) x)::text, '-'), 'comment=' || coalesce(col_description(c.oid, a.attnum), '-'))
  FROM rel c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
  LEFT JOIN pg_attrdef ad ON ad.adrelid = c.oid AND ad.adnum = a.attnum
 WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'c')
UNION ALL
SELECT 'view', c.relname, pg_get_viewdef(c.oid) FROM rel c WHERE c.relkind IN ('v', 'm')
UNION ALL
SELECT 'index', c.relname, pg_get_indexdef(c.oid) || coalesce(' comment=' || obj_description(c.oid, 'pg_class'), '')
  FROM rel c WHERE c.relkind IN ('i', 'I')
UNION ALL
SELECT 'sequence', s.sequencename,
       concat_ws(' ', s.data_type, s.start_value, s.min_value, s.max_value, s.increment_by, s.cycle, s.cache_size)
  FROM pg_sequences s WHERE s.schemaname = 'loyalty'
UNION ALL
SELECT 'constraint', c.relname || '.' || k.conname,
       pg_get_constraintdef(k.oid) || coalesce(' comment=' || obj_description(k.oid, 'pg_constraint'), '')
  FROM rel c JOIN pg_constraint k ON k.conrelid = c.oid
UNION ALL
SELECT 'trigger', c.relname || '.' || t.tgname, pg_get_triggerdef(t.oid) || ' enabled=' || t.tgenabled::text
  FROM rel c JOIN pg_trigger t ON t.tgrelid = c.oid AND NOT t.tgisinternal
UNION ALL
SELECT 'rule', c.relname || '.' || r.rulename, pg_get_ruledef(r.oid)
  FROM rel c JOIN pg_rewrite r ON r.ev_class = c.oid AND r.rulename <> '_RETURN'
UNION ALL
SELECT 'policy', c.relname || '.' || p.polname,
       concat_ws(' ', p.polcmd::text, p.polpermissive, p.polroles::regrole[]::text,
                 pg_get_expr(p.polqual, p.polrelid), pg_get_expr(p.polwithcheck, p.polrelid))
  FROM rel c JOIN pg_policy p ON p.polrelid = c.oid
UNION ALL
SELECT 'type', t.typname,
       concat_ws(' ', t.typtype::text, t.typbasetype::regtype, t.typnotnull, t.typdefault,
                 (SELECT string_agg(e.enumlabel, ',' ORDER BY e.enumsortorder) FROM pg_enum e WHERE e.enumtypid = t.oid),
                 (SELECT string_agg(pg_get_constraintdef(k.oid), ',' ORDER BY k.conname) FROM pg_constraint k WHERE k.contypid = t.oid),
                 'acl=' || coalesce((SELECT array_agg(x::text ORDER BY x::text) FROM unnest(t.typacl) x)::text, '-'), 'comment=' || coalesce(obj_description(t.oid, 'pg_type'), '-'))
  FROM pg_type t, ns WHERE t.typnamespace = ns.oid AND t.typtype IN ('e', 'd', 'c', 'b', 'r')
   AND NOT EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = t.typrelid AND c.relkind <> 'c')
UNION ALL
SELECT 'schema', n.nspname, concat_ws(' ', 'acl=' || (SELECT array_agg(x::text ORDER BY x::text) FROM unnest(n.nspacl) x)::text, 'comment=' || obj_description(n.oid, 'pg_namespace'))
  FROM pg_namespace n, ns WHERE n.oid = ns.oid
UNION ALL
-- what pg_dump is told to keep, and with which filter
SELECT 'dump', t.oid::regclass::text, coalesce(ext.extcondition[t.i], '')
  FROM ext, unnest(ext.extconfig) WITH ORDINALITY t(oid, i)
$fn$;
