//! Table mappings (`[[pipeline.table]]`) checked against the table Postgres has: which
//! columns a publication may list, which sort key ClickHouse may use, and which columns a
//! publication row filter may read. Pure: the source feeds the catalog's facts in.
//!
//! Postgres checks a publication's column list and row filter only when the table is
//! written: a list without the replica identity, or a filter on a column outside it, makes
//! the *user's* UPDATE and DELETE fail (`cannot update table … because a column list/row
//! filter … is not part of the replica identity`). So it is checked here first.
//!
//! Must never: accept a column list or row filter under which Postgres would refuse the
//! user's UPDATE or DELETE, or a sort key whose old values a delete does not carry (the
//! tombstone would miss the row and it would stay alive in FINAL).

use crate::schema::{Identity, TableSchema};

/// The publication column list for `table` under a mapping's `columns` (only these) or
/// `exclude_columns` (all but these): `None` when every column is published. In table order
/// (Postgres keeps the list by attribute number whatever order it was written in).
pub fn published_columns(
    table: &TableSchema,
    include: &[String],
    exclude: &[String],
) -> Result<Option<Vec<String>>, String> {
    let name = table.qualified();
    let unknown: Vec<&str> = include
        .iter()
        .chain(exclude)
        .filter(|n| !table.columns.iter().any(|c| &c.name == *n))
        .map(String::as_str)
        .collect();
    if !unknown.is_empty() {
        return Err(format!(
            "{name} has no column {}",
            unknown
                .iter()
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if include.is_empty() && exclude.is_empty() {
        return Ok(None);
    }
    let chosen: Vec<String> = table
        .columns
        .iter()
        .filter(|c| {
            if include.is_empty() {
                !exclude.contains(&c.name)
            } else {
                include.contains(&c.name)
            }
        })
        .map(|c| c.name.clone())
        .collect();
    if chosen.len() == table.columns.len() {
        return Ok(None);
    }
    if table.identity == Identity::Full {
        return Err(format!(
            "{name} has REPLICA IDENTITY FULL, under which Postgres refuses UPDATE and DELETE on a table whose publication leaves out a column; replicate every column, or give the table a primary key and REPLICA IDENTITY DEFAULT"
        ));
    }
    let missing_keys: Vec<&str> = table
        .columns
        .iter()
        .filter(|c| c.is_key && !chosen.contains(&c.name))
        .map(|c| c.name.as_str())
        .collect();
    if !missing_keys.is_empty() {
        return Err(format!(
            "the columns chosen for {name} leave out its key column {} (Postgres would refuse UPDATE and DELETE on the table, and ClickHouse needs the key)",
            missing_keys
                .iter()
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    Ok(Some(chosen))
}

/// Checks a mapping's `order_by` for ClickHouse: known columns, each once, every key column
/// among them (rows are told apart by the key), and any other column only under REPLICA
/// IDENTITY FULL (only then do deletes and updates carry its old value, which the tombstone
/// needs to find the row) and NOT NULL (a ClickHouse sort key holds no NULL).
pub fn check_order_by(table: &TableSchema, order_by: &[String]) -> Result<(), String> {
    let name = table.qualified();
    for (i, n) in order_by.iter().enumerate() {
        let Some(c) = table.columns.iter().find(|c| &c.name == n) else {
            return Err(format!(
                "order_by names `{n}`, which {name} does not replicate"
            ));
        };
        if order_by[..i].contains(n) {
            return Err(format!("order_by names `{n}` twice"));
        }
        if !c.is_key {
            if table.identity != Identity::Full {
                return Err(format!(
                    "order_by column `{n}` of {name} is not a key column: Postgres sends its old value with updates and deletes only under REPLICA IDENTITY FULL (run ALTER TABLE … REPLICA IDENTITY FULL, or leave it out of order_by)"
                ));
            }
            if c.nullable {
                return Err(format!(
                    "order_by column `{n}` of {name} takes NULLs, which a ClickHouse sort key cannot hold; make it NOT NULL in Postgres or leave it out of order_by"
                ));
            }
        }
    }
    let missing: Vec<&str> = table
        .columns
        .iter()
        .filter(|c| c.is_key && !order_by.contains(&c.name))
        .map(|c| c.name.as_str())
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "order_by of {name} leaves out its key column {}: rows with the same sort key would collapse into one",
            missing
                .iter()
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    Ok(())
}

/// The table as it is replicated: only the `published` columns (the publication's column
/// list; `None`: all), sorted by `order_by` (checked by [`check_order_by`]; empty: the key).
pub fn shape(
    mut table: TableSchema,
    published: Option<&[String]>,
    order_by: &[String],
) -> Result<TableSchema, String> {
    if let Some(cols) = published {
        table.columns.retain(|c| cols.contains(&c.name));
    }
    if !order_by.is_empty() {
        check_order_by(&table, order_by)?;
    }
    table.order_by = order_by.to_vec();
    Ok(table)
}

/// The attribute numbers a publication row filter reads, from its stored expression
/// (`pg_publication_rel.prqual::text`, the node tree): each `VAR`'s `:varattno`. 0 is a
/// whole-row reference (every column); system columns are negative.
pub fn filter_attnums(node_tree: &str) -> Vec<i32> {
    let mut out = Vec::new();
    let mut rest = node_tree;
    while let Some(at) = rest.find(":varattno ") {
        rest = &rest[at + ":varattno ".len()..];
        let end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '-'))
            .unwrap_or(rest.len());
        if let Ok(n) = rest[..end].parse::<i32>() {
            if !out.contains(&n) {
                out.push(n);
            }
        }
    }
    out
}

/// Checks that a row filter reading `columns` (names; `None` for a whole-row reference)
/// leaves the user's UPDATE and DELETE allowed: under REPLICA IDENTITY FULL anything goes,
/// else only key columns.
pub fn check_filter_columns(table: &TableSchema, columns: &[Option<String>]) -> Result<(), String> {
    if table.identity == Identity::Full {
        return Ok(());
    }
    let bad: Vec<String> = columns
        .iter()
        .filter(|c| match c {
            None => true,
            Some(n) => !table.columns.iter().any(|k| k.is_key && &k.name == n),
        })
        .map(|c| match c {
            Some(n) => format!("`{n}`"),
            None => "the whole row".to_string(),
        })
        .collect();
    if bad.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "the filter of {} reads {}, outside its replica identity: Postgres would refuse UPDATE and DELETE on the table; filter on key columns only, or set REPLICA IDENTITY FULL",
            table.qualified(),
            bad.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{Column, PgType};

    fn table(identity: Identity) -> TableSchema {
        let col = |name: &str, is_key: bool, nullable: bool| Column {
            name: name.into(),
            pg_type: PgType::Int4,
            nullable,
            is_key,
            added_default: None,
            renamed_from: None,
        };
        TableSchema {
            rel_id: 1,
            schema: "public".into(),
            name: "t".into(),
            columns: vec![
                col("id", true, false),
                col("tenant", false, false),
                col("note", false, true),
            ],
            identity,
            order_by: vec![],
        }
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn column_lists_keep_the_key_and_refuse_full_identity() {
        let t = table(Identity::Key);
        assert_eq!(published_columns(&t, &[], &[]), Ok(None));
        assert_eq!(
            published_columns(&t, &[], &s(&["note"])),
            Ok(Some(s(&["id", "tenant"])))
        );
        // Written out of order: the table's order.
        assert_eq!(
            published_columns(&t, &s(&["note", "id"]), &[]),
            Ok(Some(s(&["id", "note"])))
        );
        assert_eq!(
            published_columns(&t, &s(&["id", "tenant", "note"]), &[]),
            Ok(None)
        );
        let e = published_columns(&t, &[], &s(&["id"])).unwrap_err();
        assert!(e.contains("key column `id`"), "{e}");
        let e = published_columns(&t, &s(&["nope"]), &[]).unwrap_err();
        assert!(e.contains("no column `nope`"), "{e}");
        let e = published_columns(&table(Identity::Full), &[], &s(&["note"])).unwrap_err();
        assert!(e.contains("REPLICA IDENTITY FULL"), "{e}");
    }

    #[test]
    fn sort_keys_hold_the_key_and_extra_columns_need_full_identity() {
        let key = table(Identity::Key);
        let full = table(Identity::Full);
        assert_eq!(check_order_by(&key, &s(&["id"])), Ok(()));
        assert_eq!(check_order_by(&full, &s(&["tenant", "id"])), Ok(()));
        let e = check_order_by(&key, &s(&["tenant", "id"])).unwrap_err();
        assert!(e.contains("REPLICA IDENTITY FULL"), "{e}");
        let e = check_order_by(&full, &s(&["tenant"])).unwrap_err();
        assert!(e.contains("leaves out its key column `id`"), "{e}");
        let e = check_order_by(&full, &s(&["note", "id"])).unwrap_err();
        assert!(e.contains("NULL"), "{e}");
        let e = check_order_by(&full, &s(&["id", "id"])).unwrap_err();
        assert!(e.contains("twice"), "{e}");
        let e = check_order_by(&full, &s(&["id", "gone"])).unwrap_err();
        assert!(e.contains("`gone`"), "{e}");
    }

    #[test]
    fn shape_keeps_the_published_columns_and_the_sort_key() {
        let t = shape(
            table(Identity::Full),
            Some(&s(&["id", "tenant"])),
            &s(&["tenant", "id"]),
        )
        .unwrap();
        assert_eq!(
            t.columns
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>(),
            vec!["id", "tenant"]
        );
        assert_eq!(t.sort_indexes(), vec![1, 0]);
        // A sort column the publication leaves out is refused.
        assert!(shape(
            table(Identity::Full),
            Some(&s(&["id"])),
            &s(&["tenant", "id"])
        )
        .is_err());
        let t = shape(table(Identity::Key), None, &[]).unwrap();
        assert_eq!(t.sort_indexes(), vec![0]);
    }

    #[test]
    fn filter_columns_come_from_the_node_tree() {
        // `id > 10 AND tenant = 3` as Postgres 15 stores it (abridged).
        let tree = "{BOOLEXPR :boolop and :args ({OPEXPR :opno 521 :args ({VAR :varno 1 :varattno 1 :vartype 23} {CONST :consttype 23}) :location 5} {OPEXPR :opno 96 :args ({VAR :varno 1 :varattno 2 :vartype 23} {CONST}) } {VAR :varno 1 :varattno 1 :vartype 23}) :location -1}";
        assert_eq!(filter_attnums(tree), vec![1, 2]);
        assert_eq!(filter_attnums("{VAR :varno 1 :varattno 0}"), vec![0]);
        assert_eq!(filter_attnums(""), Vec::<i32>::new());
        let key = table(Identity::Key);
        assert_eq!(check_filter_columns(&key, &[Some("id".into())]), Ok(()));
        let e = check_filter_columns(&key, &[Some("tenant".into())]).unwrap_err();
        assert!(e.contains("`tenant`"), "{e}");
        assert!(check_filter_columns(&key, &[None]).is_err());
        assert_eq!(
            check_filter_columns(&table(Identity::Full), &[Some("tenant".into()), None]),
            Ok(())
        );
    }
}
