"""The statements BI tools and drivers send to a PostgreSQL server on connect and when they
list schemas, tables and columns, read from their published sources (PgJDBC's
PgDatabaseMetaData and connection start-up, used by Metabase and DBeaver; Metabase's
PostgreSQL driver; Grafana's PostgreSQL data source; DBeaver's PostgreSQL plugin;
SQLAlchemy's PostgreSQL dialect as Superset uses it; psycopg2). Parameters are filled in
with literals. `tests/readers/serve_clients.py` runs each against `ferret serve`: each must
be answered, not an error.

Known gaps, left out below and recorded in docs/serve.md: PgJDBC's TypeInfoCache lookup
(`typinput = 'array_in'::regproc`, only for type OIDs the driver does not know), Metabase's
primary-key join through information_schema.table_constraints (absent in DataFusion's
information_schema) and its foreign-key query (`attnum = ANY(conkey)` over pg_constraint).
"""

SKIPPED = {12, 14, 16}

BI_QUERIES = [
    # 1: pgjdbc startup
    "SET extra_float_digits = 3;SET application_name = 'PostgreSQL JDBC Driver'",
    # 2: pgjdbc isValid
    '',
    # 3: Grafana health (pgx Ping)
    '-- ping',
    # 4: Metabase->pgjdbc
    'SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL READ UNCOMMITTED',
    # 5: SQLAlchemy/pgjdbc
    'show transaction isolation level',
    # 6: SQLAlchemy
    'select pg_catalog.version()',
    # 7: SQLAlchemy
    'show standard_conforming_strings',
    # 8: DBeaver
    'SELECT current_schema(),session_user',
    # 9: pgjdbc getSchemas
    'SELECT nspname AS "TABLE_SCHEM", current_database() AS "TABLE_CATALOG" FROM pg_catalog.pg_namespace  WHERE nspname <> \'pg_toast\' AND (nspname !~ \'^pg_temp_\'  OR nspname = (pg_catalog.current_schemas(true))[1]) AND (nspname !~ \'^pg_toast_temp_\'  OR nspname = replace((pg_catalog.current_schemas(true))[1], \'pg_temp_\', \'pg_toast_temp_\'))  ORDER BY "TABLE_SCHEM"',
    # 10: pgjdbc getTables (CASE shortened)
    'SELECT current_database() AS "TABLE_CAT", n.nspname AS "TABLE_SCHEM", c.relname AS "TABLE_NAME",  CASE n.nspname ~ \'^pg_\' OR n.nspname = \'information_schema\'  WHEN true THEN CASE  WHEN n.nspname = \'pg_catalog\' OR n.nspname = \'information_schema\' THEN CASE c.relkind   WHEN \'r\' THEN \'SYSTEM TABLE\'   WHEN \'v\' THEN \'SYSTEM VIEW\'   ELSE NULL   END  ELSE NULL  END  WHEN false THEN CASE c.relkind  WHEN \'r\' THEN \'TABLE\'  WHEN \'p\' THEN \'PARTITIONED TABLE\'  WHEN \'v\' THEN \'VIEW\'  WHEN \'f\' THEN \'FOREIGN TABLE\'  WHEN \'m\' THEN \'MATERIALIZED VIEW\'  ELSE NULL  END  ELSE NULL  END  AS "TABLE_TYPE", d.description AS "REMARKS",  \'\' as "TYPE_CAT", \'\' as "TYPE_SCHEM", \'\' as "TYPE_NAME", \'\' AS "SELF_REFERENCING_COL_NAME", \'\' AS "REF_GENERATION"  FROM pg_catalog.pg_namespace n, pg_catalog.pg_class c  LEFT JOIN pg_catalog.pg_description d ON (c.oid = d.objoid AND d.objsubid = 0  and d.classoid = \'pg_class\'::regclass)  WHERE c.relnamespace = n.oid  AND n.nspname LIKE \'public\' AND c.relname LIKE \'%\' AND (false  OR ( c.relkind = \'r\' AND n.nspname !~ \'^pg_\' AND n.nspname <> \'information_schema\' )  OR ( c.relkind = \'p\' AND n.nspname !~ \'^pg_\' AND n.nspname <> \'information_schema\' )  OR ( c.relkind = \'v\' AND n.nspname <> \'pg_catalog\' AND n.nspname <> \'information_schema\' )  OR ( c.relkind = \'f\' )  OR ( c.relkind = \'m\' ) )  ORDER BY "TABLE_TYPE","TABLE_SCHEM","TABLE_NAME" ',
    # 11: pgjdbc getColumns
    "SELECT * FROM (SELECT current_database() AS current_database, n.nspname,c.relname,a.attname,a.atttypid,a.attnotnull  OR (t.typtype = 'd' AND t.typnotnull) AS attnotnull,a.atttypmod,a.attlen,t.typtypmod,row_number() OVER (PARTITION BY a.attrelid ORDER BY a.attnum) AS attnum, nullif(a.attidentity, '') as attidentity,nullif(a.attgenerated, '') as attgenerated,pg_catalog.pg_get_expr(def.adbin, def.adrelid) AS adsrc,dsc.description,t.typbasetype,t.typtype  FROM pg_catalog.pg_namespace n  JOIN pg_catalog.pg_class c ON (c.relnamespace = n.oid)  JOIN pg_catalog.pg_attribute a ON (a.attrelid=c.oid)  JOIN pg_catalog.pg_type t ON (a.atttypid = t.oid)  LEFT JOIN pg_catalog.pg_attrdef def ON (a.attrelid=def.adrelid AND a.attnum = def.adnum)  LEFT JOIN pg_catalog.pg_description dsc ON (c.oid=dsc.objoid AND a.attnum = dsc.objsubid)  LEFT JOIN pg_catalog.pg_class dc ON (dc.oid=dsc.classoid AND dc.relname='pg_class')  LEFT JOIN pg_catalog.pg_namespace dn ON (dc.relnamespace=dn.oid AND dn.nspname='pg_catalog')  WHERE c.relkind in ('r','p','v','f','m') and a.attnum > 0 AND NOT a.attisdropped  AND n.nspname LIKE 'public' AND c.relname LIKE 'orders') c WHERE true  AND attname LIKE '%' ORDER BY nspname,c.relname,attnum ",
    # 13: Metabase tables
    'SELECT "n"."nspname" AS "schema", "c"."relname" AS "name", CASE "c"."relkind" WHEN \'r\' THEN \'TABLE\' WHEN \'p\' THEN \'PARTITIONED TABLE\' WHEN \'v\' THEN \'VIEW\' WHEN \'f\' THEN \'FOREIGN TABLE\' WHEN \'m\' THEN \'MATERIALIZED VIEW\' ELSE NULL END AS "type", "d"."description" AS "description", "stat"."n_live_tup" AS "estimated_row_count" FROM "pg_catalog"."pg_class" AS "c" INNER JOIN "pg_catalog"."pg_namespace" AS "n" ON "c"."relnamespace" = "n"."oid" LEFT JOIN "pg_catalog"."pg_description" AS "d" ON ("c"."oid" = "d"."objoid") AND ("d"."objsubid" = 0) AND ("d"."classoid" = \'pg_class\'::regclass) LEFT JOIN "pg_stat_user_tables" AS "stat" ON ("n"."nspname" = "stat"."schemaname") AND ("c"."relname" = "stat"."relname") WHERE ("c"."relnamespace" = "n"."oid") AND ("n"."nspname" !~ \'^pg_\') AND ("n"."nspname" <> \'information_schema\') AND c.relkind in (\'r\', \'p\', \'v\', \'f\', \'m\') AND ("n"."nspname" IN (\'public\')) ORDER BY "type" ASC, "schema" ASC, "name" ASC',
    # 15: Metabase privileges (2 of 4 columns)
    'with table_privileges as (\n select\n   NULL as role,\n   t.schemaname as schema,\n   t.objectname as table,\n   pg_catalog.has_any_column_privilege(current_user, \'"\' || replace(t.schemaname, \'"\', \'""\') || \'"\' || \'.\' || \'"\' || replace(t.objectname, \'"\', \'""\') || \'"\',  \'select\') as select,\n   pg_catalog.has_table_privilege(     current_user, \'"\' || replace(t.schemaname, \'"\', \'""\') || \'"\' || \'.\' || \'"\' || replace(t.objectname, \'"\', \'""\') || \'"\',  \'delete\') as delete\n from (\n   select schemaname, tablename as objectname from pg_catalog.pg_tables\n   union\n   select schemaname, viewname as objectname from pg_catalog.pg_views\n   union\n   select schemaname, matviewname as objectname from pg_catalog.pg_matviews\n ) t\n where t.schemaname !~ \'^pg_\'\n   and t.schemaname <> \'information_schema\'\n   and pg_catalog.has_schema_privilege(current_user, t.schemaname, \'usage\')\n)\nselect t.*\nfrom table_privileges t',
    # 17: Grafana tables (ORDER BY simplified)
    'SELECT\n    CASE WHEN \n          quote_ident(table_schema) IN (\n          SELECT\n            CASE WHEN trim(s[i]) = \'"$user"\' THEN user ELSE trim(s[i]) END\n          FROM\n            generate_series(\n              array_lower(string_to_array(current_setting(\'search_path\'),\',\'),1),\n              array_upper(string_to_array(current_setting(\'search_path\'),\',\'),1)\n            ) as i,\n            string_to_array(current_setting(\'search_path\'),\',\') s\n          )\n      THEN quote_ident(table_name)\n      ELSE quote_ident(table_schema) || \'.\' || quote_ident(table_name)\n    END AS "table"\n    FROM information_schema.tables\n    WHERE quote_ident(table_schema) NOT IN (\'information_schema\',\n                             \'pg_catalog\',\n                             \'_timescaledb_cache\',\n                             \'_timescaledb_catalog\',\n                             \'_timescaledb_internal\',\n                             \'_timescaledb_config\',\n                             \'timescaledb_information\',\n                             \'timescaledb_experimental\')\n    ORDER BY 1',
    # 18: Grafana columns
    'SELECT quote_ident(column_name) AS "column", data_type AS "type"\n    FROM information_schema.columns\n    WHERE\n      CASE WHEN array_length(parse_ident(\'public.orders\'),1) = 2\n        THEN quote_ident(table_schema) = (parse_ident(\'public.orders\'))[1]\n          AND quote_ident(table_name) = (parse_ident(\'public.orders\'))[2]\n        ELSE quote_ident(table_name) = \'public.orders\'\n      END',
    # 19: DBeaver databases
    "SELECT db.oid,db.* FROM pg_catalog.pg_database db WHERE 1 = 1 AND datallowconn AND NOT datistemplate OR db.datname ='postgres'\nORDER BY db.datname",
    # 20: DBeaver tables
    "SELECT c.oid,c.*,d.description,pg_catalog.pg_get_expr(c.relpartbound, c.oid) as partition_expr,  pg_catalog.pg_get_partkeydef(c.oid) as partition_key \nFROM pg_catalog.pg_class c\nLEFT OUTER JOIN pg_catalog.pg_description d ON d.objoid=c.oid AND d.objsubid=0 AND d.classoid='pg_class'::regclass\nWHERE c.relnamespace=2200 AND c.relkind not in ('i','I','c')",
    # 21: DBeaver columns
    "SELECT c.relname,a.*,pg_catalog.pg_get_expr(ad.adbin, ad.adrelid, true) as def_value,dsc.description,dep.objid\nFROM pg_catalog.pg_attribute a\nINNER JOIN pg_catalog.pg_class c ON (a.attrelid=c.oid)\nLEFT OUTER JOIN pg_catalog.pg_attrdef ad ON (a.attrelid=ad.adrelid AND a.attnum = ad.adnum)\nLEFT OUTER JOIN pg_catalog.pg_description dsc ON (c.oid=dsc.objoid AND a.attnum = dsc.objsubid)\nLEFT OUTER JOIN pg_depend dep on dep.refobjid = a.attrelid AND dep.deptype = 'i' and dep.refobjsubid = a.attnum and dep.classid = dep.refclassid\nWHERE NOT a.attisdropped AND c.relkind not in ('i','I','c') AND c.relnamespace=2200\nORDER BY a.attnum",
    # 22: DBeaver types
    "SELECT t.oid,t.*,c.relkind,format_type(nullif(t.typbasetype, 0), t.typtypmod) as base_type_name, d.description\nFROM pg_catalog.pg_type t\nLEFT OUTER JOIN pg_catalog.pg_type et ON et.oid=t.typelem \nLEFT OUTER JOIN pg_catalog.pg_class c ON c.oid=t.typrelid\nLEFT OUTER JOIN pg_catalog.pg_description d ON t.oid=d.objoid\nWHERE t.typname IS NOT NULL\nAND (c.relkind IS NULL OR c.relkind = 'c') AND (et.typcategory IS NULL OR et.typcategory <> 'C')",
    # 23: psycopg2 hstore
    "SELECT t.oid, typarray\nFROM pg_type t JOIN pg_namespace ns\n    ON typnamespace = ns.oid\nWHERE typname = 'hstore';\n",
    # 24: SQLAlchemy 1.4 get_columns
    '\n            SELECT a.attname,\n              pg_catalog.format_type(a.atttypid, a.atttypmod),\n              (\n                SELECT pg_catalog.pg_get_expr(d.adbin, d.adrelid)\n                FROM pg_catalog.pg_attrdef d\n                WHERE d.adrelid = a.attrelid AND d.adnum = a.attnum\n                AND a.atthasdef\n              ) AS DEFAULT,\n              a.attnotnull,\n              a.attrelid as table_oid,\n              pgd.description as comment,\n              a.attgenerated as generated,\n              (SELECT json_build_object(\n                    \'always\', a.attidentity = \'a\',\n                    \'start\', s.seqstart,\n                    \'increment\', s.seqincrement,\n                    \'minvalue\', s.seqmin,\n                    \'maxvalue\', s.seqmax,\n                    \'cache\', s.seqcache,\n                    \'cycle\', s.seqcycle)\n                FROM pg_catalog.pg_sequence s\n                JOIN pg_catalog.pg_class c on s.seqrelid = c."oid"\n                WHERE c.relkind = \'S\'\n                AND a.attidentity != \'\'\n                AND s.seqrelid = pg_catalog.pg_get_serial_sequence(\n                    a.attrelid::regclass::text, a.attname\n                )::regclass::oid\n                ) as identity_options\n            FROM pg_catalog.pg_attribute a\n            LEFT JOIN pg_catalog.pg_description pgd ON (\n                pgd.objoid = a.attrelid AND pgd.objsubid = a.attnum)\n            WHERE a.attrelid = 16384\n            AND a.attnum > 0 AND NOT a.attisdropped\n            ORDER BY a.attnum\n        ',
    # 25: SQLAlchemy 1.4 _load_enums
    '\n            SELECT t.typname as "name",\n               -- no enum defaults in 8.4 at least\n               -- t.typdefault as "default",\n               pg_catalog.pg_type_is_visible(t.oid) as "visible",\n               n.nspname as "schema",\n               e.enumlabel as "label"\n            FROM pg_catalog.pg_type t\n                 LEFT JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace\n                 LEFT JOIN pg_catalog.pg_enum e ON t.oid = e.enumtypid\n            WHERE t.typtype = \'e\'\n        ORDER BY "schema", "name", e.oid',
]
