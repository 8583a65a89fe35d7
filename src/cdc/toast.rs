//! Unchanged TOAST values for the ClickHouse sink: Postgres does not resend a TOASTed value
//! an update left unchanged, so the sink takes it from what it wrote before, remembered in
//! a cache per table or read back from ClickHouse. The read-back is planned per chunk: every
//! key of a chunk that needs it, one query per table and batch (a bulk update of a TOAST
//! table on a cold cache costs a few queries, not one flush and query per row).
//!
//! Pure: the cache, the plan of a chunk's lookups, the lookup query and the parse of its
//! reply; the sink does the I/O.
//!
//! Must never: answer a key with values older than the latest the sink wrote for it (a
//! copy's row can come after newer streamed changes of its key), plan a lookup for a key a
//! row earlier in the same chunk writes (its values are that row's, not ClickHouse's), or
//! attribute a reply row to any key but the one its query condition matched.

use crate::cdc::change::{ChangeItem, RowOp};
use crate::protocol::chtypes::{
    ch_ident, encode_field, key_equals_sql, stored_field_tsv, stored_select_expr, ChColumn,
    EncodeStats, DELETED_COL, VERSION_COL,
};
use crate::protocol::pgoutput::Cell;
use crate::protocol::pgtext::unescape_tsv;
use std::collections::{HashMap, HashSet};

/// Fields of one row in ClickHouse's TSV form, by column index.
pub type Fields = Vec<(usize, Vec<u8>)>;

/// Keys per lookup query, and bytes of their text: the query carries every key twice, and
/// ClickHouse parses at most `max_query_size` (256 KiB by default) of it.
pub const LOOKUP_BATCH: usize = 500;
pub const LOOKUP_BATCH_BYTES: usize = 48 << 10;

/// `keys` cut into the batches of one lookup query each.
pub fn lookup_batches(keys: &[Vec<u8>]) -> Vec<&[Vec<u8>]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, k) in keys.iter().enumerate() {
        if i > start && (i - start == LOOKUP_BATCH || bytes + k.len() > LOOKUP_BATCH_BYTES) {
            out.push(&keys[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += k.len();
    }
    if start < keys.len() {
        out.push(&keys[start..]);
    }
    out
}

/// The key columns' TSV of a row: how the cache and the lookups name a row.
pub fn key_tsv(cols: &[ChColumn], cells: &[Cell]) -> Vec<u8> {
    let mut key = Vec::new();
    for (c, cell) in cols.iter().zip(cells).filter(|(c, _)| c.is_key) {
        if !key.is_empty() {
            key.push(b'\t');
        }
        encode_field(&mut key, c, cell, &mut EncodeStats::default());
    }
    key
}

/// The values of a table's TOASTable columns as the sink last wrote them, by key (the key
/// columns' TSV). An update that leaves a TOAST value unchanged takes it from here; only a
/// miss costs a lookup. Exact because the sink is the table's only writer and sees every
/// streamed change in order; a copy's rows (at the version of its read position, below the
/// changes streamed since) can come after newer changes of their key, so an entry keeps its
/// version and an older row never replaces it. An actor restart starts empty.
#[derive(Default)]
pub struct ToastCache {
    /// Columns that came as unchanged TOAST in this table: their values are remembered.
    pub cols: Vec<usize>,
    /// By key: the version of the row the values are from, and the values.
    rows: HashMap<Vec<u8>, (u64, Fields)>,
    pub bytes: usize,
    /// The row deleted just before, and its remembered values: a key change arrives as the
    /// delete of the old key, then the row under its new key with the unchanged TOAST values
    /// of the old one.
    pub last_deleted: Option<(Vec<u8>, Option<Fields>)>,
}

impl ToastCache {
    pub fn remove(&mut self, key: &[u8]) -> Option<Fields> {
        let (_, old) = self.rows.remove(key)?;
        self.bytes -= entry_bytes(key, &old);
        Some(old)
    }

    /// Remembers the values of the row of `key` at `version`, unless a newer row's are
    /// remembered (a copied row that comes after a streamed change of its key).
    pub fn put(&mut self, key: Vec<u8>, version: u64, fields: Fields) {
        if self.rows.get(&key).is_some_and(|(v, _)| *v > version) {
            return;
        }
        self.remove(&key);
        self.bytes += entry_bytes(&key, &fields);
        self.rows.insert(key, (version, fields));
    }

    pub fn get(&self, key: &[u8]) -> Option<&Fields> {
        self.rows.get(key).map(|(_, f)| f)
    }

    /// Forgets the values (over the memory budget: misses fall back to lookups).
    pub fn forget_rows(&mut self) {
        self.rows = HashMap::new();
        self.bytes = 0;
    }

    pub fn clear(&mut self) {
        self.forget_rows();
        self.last_deleted = None;
    }
}

pub fn entry_bytes(key: &[u8], fields: &Fields) -> usize {
    key.len() + fields.iter().map(|(_, v)| v.len() + 32).sum::<usize>() + 64
}

/// The fields of `want` in `have`, if it holds every one.
pub fn fields_for(have: &Fields, want: &[usize]) -> Option<HashMap<usize, Vec<u8>>> {
    want.iter()
        .map(|i| {
            have.iter()
                .find(|(j, _)| j == i)
                .map(|(_, v)| (*i, v.clone()))
        })
        .collect()
}

/// What the planner needs to know of a table the sink writes.
pub struct TableView<'a> {
    pub cols: &'a [ChColumn],
    pub cache: &'a ToastCache,
    /// Changes below this version are skipped (the table's last TRUNCATE).
    pub fence: u64,
}

/// The keys of one table to read back before a chunk, and the columns to read.
#[derive(Debug, Default, PartialEq)]
pub struct TableLookups {
    pub keys: Vec<Vec<u8>>,
    pub cols: Vec<usize>,
}

/// The lookups a chunk needs, by relation: the keys whose first row in the chunk is an
/// update with unchanged TOAST values the cache does not hold. Rows after a schema item or a
/// truncate of their table, key changes (their values come from the old key's delete) and
/// keys an earlier row of the chunk writes are left to the row-by-row path.
pub fn plan_lookups<'a>(
    items: &[ChangeItem],
    table: impl Fn(u32) -> Option<TableView<'a>>,
) -> HashMap<u32, TableLookups> {
    // On every chunk's path: the tables with a row of unchanged TOAST values first, found
    // without allocating; a chunk with none (most) costs this scan alone.
    let wanted: HashSet<u32> = items
        .iter()
        .filter_map(|item| match item {
            // (A copy's rows are whole.)
            ChangeItem::Row { rel_id, change }
                if change.op != RowOp::Snapshot
                    && change
                        .cells
                        .iter()
                        .any(|c| matches!(c, Cell::UnchangedToast)) =>
            {
                Some(*rel_id)
            }
            _ => None,
        })
        .collect();
    let mut plan: HashMap<u32, TableLookups> = HashMap::new();
    if wanted.is_empty() {
        return plan;
    }
    let mut seen: HashSet<(u32, Vec<u8>)> = HashSet::new();
    let mut changed: HashSet<u32> = HashSet::new();
    for item in items {
        let (rel, change) = match item {
            ChangeItem::Row { rel_id, change } => (*rel_id, change),
            ChangeItem::Schema(s) => {
                changed.insert(s.rel_id);
                continue;
            }
            ChangeItem::Truncate { rels, .. } | ChangeItem::SnapshotBegin(rels) => {
                changed.extend(rels.iter().copied());
                continue;
            }
            // Snapshot rows: whole, nothing to fill.
            ChangeItem::Block { .. } => continue,
        };
        if changed.contains(&rel) || !wanted.contains(&rel) {
            continue;
        }
        let Some(t) = table(rel) else { continue };
        if change.cells.len() != t.cols.len() || (change.version > 0 && change.version < t.fence) {
            continue;
        }
        let key = key_tsv(t.cols, &change.cells);
        let first = seen.insert((rel, key.clone()));
        if !first || change.is_delete() || change.moved_from.is_some() {
            continue;
        }
        let toast = change.unchanged_toast();
        if toast.is_empty()
            || t.cache
                .get(&key)
                .and_then(|have| fields_for(have, &toast))
                .is_some()
            || t.cache
                .last_deleted
                .as_ref()
                .is_some_and(|(k, _)| *k == key)
        {
            continue;
        }
        let p = plan.entry(rel).or_default();
        for i in toast {
            if !p.cols.contains(&i) {
                p.cols.push(i);
            }
        }
        p.keys.push(key);
    }
    plan
}

/// The query that reads back `fetch` columns of the rows of `keys` (key columns' TSV) as
/// ClickHouse has them now: per key the latest version not deleted, numbered by the key's
/// position in `keys` (the same typed comparison as a single key's lookup names each row).
pub fn lookup_sql(
    database: &str,
    table: &str,
    cols: &[ChColumn],
    keys: &[Vec<u8>],
    fetch: &[usize],
) -> String {
    let conds: Vec<String> = keys
        .iter()
        .map(|key| {
            let fields = key.split(|&b| b == b'\t');
            let parts: Vec<String> = cols
                .iter()
                .filter(|c| c.is_key)
                .zip(fields)
                .map(|(c, v)| key_equals_sql(c, &unescape_tsv(&String::from_utf8_lossy(v))))
                .collect();
            format!("({})", parts.join(" AND "))
        })
        .collect();
    let mut which = String::from("multiIf(");
    for (i, c) in conds.iter().enumerate() {
        which += &format!("{c}, {i}, ");
    }
    which += "-1)";
    let exprs: Vec<String> = fetch
        .iter()
        .map(|&i| stored_select_expr(&cols[i]))
        .collect();
    let n = ch_ident(LOOKUP_INDEX);
    format!(
        "SELECT {which} AS {n}, {} FROM {}.{} WHERE {} = 0 AND ({}) ORDER BY {} DESC LIMIT 1 BY {n}",
        exprs.join(", "),
        ch_ident(database),
        ch_ident(table),
        ch_ident(DELETED_COL),
        conds.join(" OR "),
        ch_ident(VERSION_COL)
    )
}

/// The alias of the key's position in a lookup query.
const LOOKUP_INDEX: &str = "__tributary_lookup";

/// The reply of [`lookup_sql`]: the values found, by the key's position in its `keys`; a key
/// without a row is absent.
pub fn parse_lookup(
    text: &str,
    cols: &[ChColumn],
    keys: usize,
    fetch: &[usize],
) -> Result<HashMap<usize, Fields>, String> {
    let mut out = HashMap::new();
    for line in text.lines() {
        let mut fields = line.split('\t');
        let i: usize = fields
            .next()
            .and_then(|f| f.parse().ok())
            .filter(|i| *i < keys)
            .ok_or_else(|| format!("a lookup row of no key asked for: {line:.80}"))?;
        let mut values = Vec::with_capacity(fetch.len());
        for &c in fetch {
            let field = fields
                .next()
                .ok_or_else(|| format!("a lookup row without `{}`", cols[c].name))?;
            let tsv = stored_field_tsv(&cols[c], field)
                .ok_or_else(|| format!("unreadable stored value of `{}`", cols[c].name))?;
            values.push((c, tsv));
        }
        if out.insert(i, values).is_some() {
            return Err(format!("two lookup rows for one key: {line:.80}"));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cdc::change::RowChange;
    use crate::protocol::chtypes::Codec;
    use bytes::Bytes;

    fn col(name: &str, ch_type: &str, is_key: bool) -> ChColumn {
        ChColumn {
            name: name.into(),
            ch_type: ch_type.into(),
            codec: if ch_type == "Int32" {
                Codec::Number
            } else {
                Codec::Text
            },
            nullable: !is_key,
            is_key,
            note: None,
            default_expr: None,
            renamed_from: None,
        }
    }

    fn cols() -> Vec<ChColumn> {
        vec![
            col("id", "Int32", true),
            col("n", "Int32", false),
            col("big", "String", false),
        ]
    }

    fn row(op: RowOp, version: u64, id: &str, big: Option<&str>) -> ChangeItem {
        ChangeItem::Row {
            rel_id: 7,
            change: RowChange {
                op,
                version,
                cells: vec![
                    Cell::Text(Bytes::from(id.to_string())),
                    Cell::Text(Bytes::from_static(b"1")),
                    match big {
                        Some(b) => Cell::Text(Bytes::from(b.to_string())),
                        None => Cell::UnchangedToast,
                    },
                ],
                xid: 0,
                commit_us: 0,
                moved_from: None,
            },
        }
    }

    #[test]
    fn a_copied_row_after_a_newer_change_of_its_key_leaves_the_newer_toast_values() {
        let mut cache = ToastCache::default();
        let key = b"11".to_vec();
        // Streamed: the new value at 200; then the copy's row of before, at its read
        // position 99.
        cache.put(key.clone(), 200, vec![(2, b"new".to_vec())]);
        cache.put(key.clone(), 99, vec![(2, b"old".to_vec())]);
        assert_eq!(cache.get(&key), Some(&vec![(2, b"new".to_vec())]));
        // A later change replaces it; the bytes are counted once.
        cache.put(key.clone(), 300, vec![(2, b"newer".to_vec())]);
        assert_eq!(cache.get(&key), Some(&vec![(2, b"newer".to_vec())]));
        assert_eq!(
            cache.bytes,
            entry_bytes(&key, &vec![(2, b"newer".to_vec())])
        );
        assert_eq!(cache.remove(&key), Some(vec![(2, b"newer".to_vec())]));
        assert_eq!(cache.bytes, 0);
    }

    #[test]
    fn a_chunk_plans_the_first_unchanged_rows_of_keys_it_does_not_write_first() {
        let cols = cols();
        let mut cache = ToastCache::default();
        cache.put(b"3".to_vec(), 10, vec![(2, b"cached".to_vec())]);
        let items = vec![
            row(RowOp::Update, 20, "1", None),
            // Written before its unchanged update: that row's values, not ClickHouse's.
            row(RowOp::Update, 21, "2", Some("full")),
            row(RowOp::Update, 22, "2", None),
            // In the cache.
            row(RowOp::Update, 23, "3", None),
            // Twice: asked once.
            row(RowOp::Update, 24, "1", None),
            // Below the fence: skipped by the sink.
            row(RowOp::Update, 4, "5", None),
            row(RowOp::Update, 25, "6", None),
        ];
        let plan = plan_lookups(&items, |rel| {
            (rel == 7).then_some(TableView {
                cols: &cols,
                cache: &cache,
                fence: 5,
            })
        });
        assert_eq!(
            plan[&7],
            TableLookups {
                keys: vec![b"1".to_vec(), b"6".to_vec()],
                cols: vec![2]
            }
        );
        // A table unknown to the sink, or rows after its schema changed: none.
        assert!(plan_lookups(&items, |_| None).is_empty());
    }

    #[test]
    fn lookups_are_cut_by_keys_and_by_bytes() {
        let small: Vec<Vec<u8>> = (0..1201).map(|i| i.to_string().into_bytes()).collect();
        let sizes: Vec<usize> = lookup_batches(&small).iter().map(|b| b.len()).collect();
        assert_eq!(sizes, vec![500, 500, 201]);
        let wide: Vec<Vec<u8>> = (0..5).map(|_| vec![b'k'; 20 << 10]).collect();
        let sizes: Vec<usize> = lookup_batches(&wide).iter().map(|b| b.len()).collect();
        assert_eq!(sizes, vec![2, 2, 1]);
        // One key over the budget still gets its query.
        let huge = vec![vec![b'k'; 60 << 10], b"1".to_vec()];
        let sizes: Vec<usize> = lookup_batches(&huge).iter().map(|b| b.len()).collect();
        assert_eq!(sizes, vec![1, 1]);
        assert!(lookup_batches(&[]).is_empty());
    }

    #[test]
    fn lookups_number_rows_by_the_key_their_condition_matched() {
        let cols = cols();
        let keys = vec![b"1".to_vec(), b"it\\tab".to_vec()];
        let sql = lookup_sql("db", "t", &cols, &keys, &[2]);
        assert!(
            sql.starts_with("SELECT multiIf((`id` = CAST('1' AS "),
            "{sql}"
        );
        assert!(
            sql.contains("CAST('it\\tab' AS "),
            "the key unescaped from TSV: {sql}"
        );
        assert!(
            sql.ends_with("ORDER BY `_version` DESC LIMIT 1 BY `__tributary_lookup`"),
            "{sql}"
        );
        let got = parse_lookup("1\tvalue\\n2\n0\t\\N\n", &cols, 2, &[2]).unwrap();
        assert_eq!(got[&1], vec![(2, b"value\\n2".to_vec())]);
        assert_eq!(got[&0], vec![(2, b"\\N".to_vec())]);
        assert!(
            parse_lookup("2\tx\n", &cols, 2, &[2]).is_err(),
            "no such key"
        );
        assert!(
            parse_lookup("0\tx\n0\ty\n", &cols, 2, &[2]).is_err(),
            "one per key"
        );
        assert!(
            parse_lookup("0\n", &cols, 2, &[2]).is_err(),
            "a missing value"
        );
    }
}
