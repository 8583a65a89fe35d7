//! DDL for a replicated ClickHouse cluster (`clickhouse.cluster`): each statement tributary
//! writes for one server, placed on the cluster: `ON CLUSTER <name>` after the object's name,
//! and a MergeTree engine as its `Replicated…` form, with the table's ZooKeeper path and the
//! servers' `{replica}` macro. Pure: the client applies it to every DDL it sends.
//!
//! With `clickhouse.distributed`, each table's live view also gets a `Distributed` table
//! over the cluster ([`distributed_sql`]): the live rows, read from any node of any shard.
//!
//! Must never: pass a DDL it does not recognise through unchanged (it would run on one
//! replica only: an error instead), or read a name or a value inside quotes as SQL.

use crate::chtypes::{ch_ident, ch_literal};

/// The DDL tributary writes, by their opening words (the object's name follows them).
const SHAPES: &[&str] = &[
    "CREATE DATABASE IF NOT EXISTS ",
    "CREATE TABLE IF NOT EXISTS ",
    // After the longer shape above: a Distributed table only (see `distributed_sql`).
    "CREATE TABLE ",
    "CREATE VIEW ",
    "DROP TABLE IF EXISTS ",
    "DROP VIEW IF EXISTS ",
    "ALTER TABLE ",
];

/// Runs on one replica as it is: a replicated table's TRUNCATE goes through the table's own
/// replication log, in order with its inserts. (`ON CLUSTER`, each replica would run it, and
/// one that was away would run it when it is back, after rows written since.)
const REPLICATED_BY_THE_TABLE: &[&str] = &["TRUNCATE TABLE "];

/// Whether `sql` is a statement that changes objects (and so must run on every replica).
pub fn is_ddl(sql: &str) -> bool {
    let head = sql.trim_start();
    [
        "CREATE ",
        "ALTER ",
        "DROP ",
        "TRUNCATE ",
        "RENAME ",
        "EXCHANGE ",
    ]
    .iter()
    .any(|w| head.len() >= w.len() && head[..w.len()].eq_ignore_ascii_case(w))
}

/// `sql` (one of tributary's DDL shapes) placed on `cluster`, with replicated tables at
/// `path` (`{database}` and `{table}` replaced here; `{shard}` left to the servers).
pub fn on_cluster(sql: &str, cluster: &str, path: &str) -> Result<String, String> {
    let sql = sql.trim();
    if REPLICATED_BY_THE_TABLE.iter().any(|s| sql.starts_with(s)) {
        return Ok(sql.to_string());
    }
    let shape = SHAPES
        .iter()
        .find(|s| sql.starts_with(*s))
        .ok_or_else(|| format!("cannot place this statement on a cluster: {}", head(sql)))?;
    let rest = &sql[shape.len()..];
    let (names, len) = qualified_name(rest)
        .ok_or_else(|| format!("cannot read the object's name in: {}", head(sql)))?;
    let at = shape.len() + len;
    let mut out = String::with_capacity(sql.len() + 160);
    out.push_str(&sql[..at]);
    out.push_str(" ON CLUSTER ");
    out.push_str(&ch_ident(cluster));
    let tail = &sql[at..];
    if *shape == "CREATE TABLE " && is_distributed(tail) {
        // Holds no rows: the same table on every node, over the cluster's replicated ones.
        out.push_str(tail);
    } else if *shape == "CREATE TABLE " {
        return Err(format!(
            "only a Distributed table is created without IF NOT EXISTS: {}",
            head(sql)
        ));
    } else if *shape == "CREATE TABLE IF NOT EXISTS " {
        let (db, table) = match names.as_slice() {
            [db, t] => (db.as_str(), t.as_str()),
            _ => return Err(format!("a table without its database: {}", head(sql))),
        };
        out.push_str(&replicated_engine(tail, db, table, path)?);
    } else {
        out.push_str(tail);
    }
    Ok(out)
}

/// The suffix of the Distributed table over a table's live view: `<table>_all`.
pub const DISTRIBUTED_SUFFIX: &str = "_all";

/// The DROP and CREATE of `<table>_all` in `db`: a `Distributed` table over every shard's
/// `view` (the table's live view) on `cluster`, with the view's columns. Made again with
/// the view (a Distributed table keeps the columns it was created with).
pub fn distributed_sql(db: &str, table: &str, view: &str, cluster: &str) -> (String, String) {
    let name = format!(
        "{}.{}",
        ch_ident(db),
        ch_ident(&format!("{table}{DISTRIBUTED_SUFFIX}"))
    );
    (
        format!("DROP TABLE IF EXISTS {name}"),
        format!(
            "CREATE TABLE {name} AS {}.{} ENGINE = Distributed({}, {}, {})",
            ch_ident(db),
            ch_ident(view),
            ch_literal(cluster),
            ch_literal(db),
            ch_literal(view)
        ),
    )
}

/// Whether a CREATE TABLE's tail (after its name) is `AS <table> ENGINE = Distributed(…)`.
fn is_distributed(tail: &str) -> bool {
    const ENGINE: &str = " ENGINE = Distributed(";
    tail.starts_with(" AS ")
        && find_unquoted(tail, ENGINE).is_some_and(|at| tail[at + ENGINE.len()..].ends_with(')'))
}

/// The start of a statement, for an error (never a whole statement: it may hold values).
fn head(sql: &str) -> String {
    sql.chars().take(60).collect()
}

/// The `db.table` (or one name) at the start of `s`, unquoted, and its length in `s`.
fn qualified_name(s: &str) -> Option<(Vec<String>, usize)> {
    let mut names = Vec::new();
    let mut i = 0;
    loop {
        let (name, n) = ident(&s[i..])?;
        names.push(name);
        i += n;
        if s[i..].starts_with('.') && names.len() < 2 {
            i += 1;
        } else {
            return Some((names, i));
        }
    }
}

/// One identifier: backquoted (with backslash escapes, as `ch_ident` writes them) or bare.
fn ident(s: &str) -> Option<(String, usize)> {
    if let Some(body) = s.strip_prefix('`') {
        let mut out = String::new();
        let mut chars = body.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => out.push(chars.next()?.1),
                '`' => return Some((out, i + 2)),
                c => out.push(c),
            }
        }
        None
    } else {
        let n = s
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(s.len());
        (n > 0).then(|| (s[..n].to_string(), n))
    }
}

/// The byte offset of the first `needle` in `s` outside backquotes and single quotes.
fn find_unquoted(s: &str, needle: &str) -> Option<usize> {
    let b = s.as_bytes();
    let mut quote: Option<u8> = None;
    let mut i = 0;
    while i < b.len() {
        match (quote, b[i]) {
            (Some(_), b'\\') => i += 1,
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, c @ (b'`' | b'\'')) => quote = Some(c),
            (None, _) if s[i..].starts_with(needle) => return Some(i),
            (None, _) => {}
        }
        i += 1;
    }
    None
}

/// `tail` (a CREATE TABLE's columns and engine) with its MergeTree engine replicated.
fn replicated_engine(tail: &str, db: &str, table: &str, path: &str) -> Result<String, String> {
    const ENGINE: &str = " ENGINE = ";
    let at = find_unquoted(tail, ENGINE)
        .ok_or_else(|| format!("no ENGINE in the CREATE TABLE of `{table}`"))?
        + ENGINE.len();
    let rest = &tail[at..];
    let name_len = rest
        .find(|c: char| !c.is_ascii_alphanumeric())
        .unwrap_or(rest.len());
    let engine = &rest[..name_len];
    if !engine.ends_with("MergeTree") || engine.starts_with("Replicated") {
        return Err(format!(
            "the engine {engine} of `{table}` has no replicated form to place on a cluster"
        ));
    }
    let zk = path
        .replace("{database}", &path_part(db))
        .replace("{table}", &path_part(table));
    let mut out = String::with_capacity(tail.len() + zk.len() + 40);
    out.push_str(&tail[..at]);
    out.push_str("Replicated");
    out.push_str(engine);
    out.push('(');
    out.push_str(&ch_literal(&zk));
    out.push_str(", '{replica}'");
    let after = &rest[name_len..];
    match after.strip_prefix('(') {
        Some(args) if args.starts_with(')') => out.push_str(args),
        Some(args) => {
            out.push_str(", ");
            out.push_str(args);
        }
        None => {
            out.push(')');
            out.push_str(after);
        }
    }
    Ok(out)
}

/// A name as one level of a ZooKeeper path: `/` and `%` percent-encoded, so that no name
/// adds a level or meets another's encoding.
fn path_part(name: &str) -> String {
    name.replace('%', "%25").replace('/', "%2F")
}

#[cfg(test)]
mod tests {
    use super::*;

    const PATH: &str = "/clickhouse/tables/{shard}/{database}/{table}";

    fn placed(sql: &str) -> String {
        on_cluster(sql, "c1", PATH).unwrap()
    }

    #[test]
    fn every_shape_gets_on_cluster_after_its_name() {
        assert_eq!(
            placed("CREATE DATABASE IF NOT EXISTS `d`"),
            "CREATE DATABASE IF NOT EXISTS `d` ON CLUSTER `c1`"
        );
        assert_eq!(
            placed("ALTER TABLE `d`.`t` ADD COLUMN `x` Nullable(String) AFTER `v`"),
            "ALTER TABLE `d`.`t` ON CLUSTER `c1` ADD COLUMN `x` Nullable(String) AFTER `v`"
        );
        assert_eq!(
            placed("DROP TABLE IF EXISTS `d`.`t_live`"),
            "DROP TABLE IF EXISTS `d`.`t_live` ON CLUSTER `c1`"
        );
        assert_eq!(
            placed("CREATE VIEW `d`.`t_live` AS SELECT * FROM `d`.`t` FINAL"),
            "CREATE VIEW `d`.`t_live` ON CLUSTER `c1` AS SELECT * FROM `d`.`t` FINAL"
        );
        // The table's replication log carries it.
        assert_eq!(placed("TRUNCATE TABLE `d`.`t`"), "TRUNCATE TABLE `d`.`t`");
    }

    #[test]
    fn tables_are_created_replicated_at_their_own_path() {
        assert_eq!(
            placed("CREATE TABLE IF NOT EXISTS `d`.`t` (`id` Int64, `_version` UInt64) ENGINE = ReplacingMergeTree(`_version`) ORDER BY (`id`)"),
            "CREATE TABLE IF NOT EXISTS `d`.`t` ON CLUSTER `c1` (`id` Int64, `_version` UInt64) ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/d/t', '{replica}', `_version`) ORDER BY (`id`)"
        );
        assert_eq!(
            placed("CREATE TABLE IF NOT EXISTS `d`.`s` (`k` String) ENGINE = ReplacingMergeTree() ORDER BY (`k`)"),
            "CREATE TABLE IF NOT EXISTS `d`.`s` ON CLUSTER `c1` (`k` String) ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/d/s', '{replica}') ORDER BY (`k`)"
        );
        assert_eq!(
            placed("CREATE TABLE IF NOT EXISTS `d`.`s` (`k` String) ENGINE = MergeTree ORDER BY (`k`)"),
            "CREATE TABLE IF NOT EXISTS `d`.`s` ON CLUSTER `c1` (`k` String) ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/d/s', '{replica}') ORDER BY (`k`)"
        );
    }

    #[test]
    fn quoted_names_and_values_are_never_read_as_sql() {
        // A column named like the engine clause, a name with quotes, dots and slashes.
        let sql = "CREATE TABLE IF NOT EXISTS `d.b`.`t\\`; DROP/x` (`a ENGINE = Log` String DEFAULT ' ENGINE = x', `_version` UInt64) ENGINE = ReplacingMergeTree(`_version`) ORDER BY (`a ENGINE = Log`)";
        assert_eq!(
            placed(sql),
            "CREATE TABLE IF NOT EXISTS `d.b`.`t\\`; DROP/x` ON CLUSTER `c1` (`a ENGINE = Log` String DEFAULT ' ENGINE = x', `_version` UInt64) ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/d.b/t`; DROP%2Fx', '{replica}', `_version`) ORDER BY (`a ENGINE = Log`)"
        );
        // A name with a quote in the path literal.
        let sql = "CREATE TABLE IF NOT EXISTS `d`.`it's` (`k` String) ENGINE = ReplacingMergeTree ORDER BY (`k`)";
        assert!(
            placed(sql).contains("'/clickhouse/tables/{shard}/d/it\\'s'"),
            "{}",
            placed(sql)
        );
    }

    #[test]
    fn a_distributed_table_over_a_live_view_is_placed_as_it_is() {
        let (drop, create) = distributed_sql("d", "t", "t_live", "c1");
        assert_eq!(
            placed(&drop),
            "DROP TABLE IF EXISTS `d`.`t_all` ON CLUSTER `c1`"
        );
        assert_eq!(
            placed(&create),
            "CREATE TABLE `d`.`t_all` ON CLUSTER `c1` AS `d`.`t_live` ENGINE = Distributed('c1', 'd', 't_live')"
        );
        // Quotes in every name stay quoted.
        let (_, create) = distributed_sql("d'b", "t`x", "t`x_live", "c'1");
        assert_eq!(
            placed(&create),
            "CREATE TABLE `d'b`.`t\\`x_all` ON CLUSTER `c1` AS `d'b`.`t\\`x_live` ENGINE = Distributed('c\\'1', 'd\\'b', 't`x_live')"
        );
    }

    #[test]
    fn unknown_shapes_and_engines_are_errors() {
        for sql in [
            "RENAME TABLE `d`.`a` TO `d`.`b`",
            "CREATE TABLE `d`.`t` (x Int8) ENGINE = ReplacingMergeTree ORDER BY x",
            "CREATE TABLE `d`.`t` AS `d`.`u` ENGINE = MergeTree ORDER BY x",
            "CREATE TABLE `d`.`t` AS `d`.`u` ENGINE = Distributed('c', 'd', 'u') SETTINGS x = 1",
            "CREATE TABLE IF NOT EXISTS `d`.`t` (x Int8) ENGINE = Log",
            "CREATE TABLE IF NOT EXISTS `d`.`t` (x Int8) ENGINE = ReplicatedMergeTree('/p', 'r') ORDER BY x",
            "CREATE TABLE IF NOT EXISTS `t` (x Int8) ENGINE = MergeTree ORDER BY x",
            "ALTER TABLE `d",
        ] {
            assert!(on_cluster(sql, "c", PATH).is_err(), "{sql}");
        }
        assert!(is_ddl("  create table x") && is_ddl("TRUNCATE TABLE `t`"));
        assert!(!is_ddl("SELECT 1") && !is_ddl("INSERT INTO t FORMAT TSV"));
    }
}
