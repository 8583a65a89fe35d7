//! From pgoutput messages to change items, without I/O: the Postgres source's stream loop
//! feeds each decoded message here and does only what needs a server (loading a changed
//! table's schema from the catalog, sending chunks, answering keepalives).
//!
//! What it decides: transaction stamps (xid, commit time) on every row; a key change becomes
//! the old key's delete and the new row's insert (which remembers the old row, for its
//! unchanged TOAST values); with REPLICA IDENTITY FULL an unchanged TOAST value is taken from
//! the old row Postgres sent; tables the publication streams but the config does not list
//! are skipped, their TRUNCATEs too; a Relation that repeats the last one changes nothing.
//!
//! Must never: emit a row before its table's schema, reorder the stream, or turn an unchanged
//! TOAST value into anything but the old row's value or [`Cell::UnchangedToast`].

use crate::cdc::change::{ChangeItem, RowOp};
use crate::protocol::pgoutput::{Cell, LogicalMessage, Lsn, RelationColumn};
use crate::protocol::schema::{SharedSchema, TableSchema};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// What one message asks of the stream loop.
#[derive(Debug)]
pub enum Step {
    /// A change for the chunk, in stream order.
    Item(ChangeItem),
    /// The transaction ended at `end_lsn`, committed at `commit_us` (µs since the Unix epoch).
    Commit { end_lsn: Lsn, commit_us: i64 },
    /// A table's columns are new or changed: load its schema (the catalog knows the types)
    /// and hand it to [`PgChanges::relation_loaded`] before the next message.
    LoadRelation {
        rel_id: u32,
        namespace: String,
        name: String,
        /// `relreplident`: `d`, `n`, `f` or `i`.
        replica_identity: u8,
        columns: Vec<RelationColumn>,
    },
    /// A published table the config does not list, seen for the first time: its changes
    /// are skipped (worth one log line).
    Skipped { table: String },
}

/// The translator's state: the schemas streamed so far and the open transaction.
#[derive(Default)]
pub struct PgChanges {
    /// `schema.table` the config lists; empty: every published table.
    wanted: Vec<(String, String)>,
    schemas: HashMap<u32, SharedSchema>,
    /// Last Relation seen per table, to tell schema changes from repeats.
    relations: HashMap<u32, Vec<RelationColumn>>,
    /// Tables the publication streams but the config does not list.
    ignored: HashSet<u32>,
    in_txn: bool,
    /// The open transaction's xid and commit time (µs since the Unix epoch).
    tx: (u32, i64),
}

/// pgoutput's commit timestamps (and the replication protocol's send times) are µs since
/// 2000-01-01.
pub(crate) fn unix_micros_from_pg(ts: i64) -> i64 {
    // Saturating: the value comes from the server (no panic on a garbage timestamp).
    ts.saturating_add(946_684_800_000_000)
}

impl PgChanges {
    /// A translator for the tables `wanted` (empty: all published), whose schemas the
    /// stream starts with.
    pub fn new(wanted: Vec<(String, String)>, schemas: HashMap<u32, SharedSchema>) -> Self {
        PgChanges {
            wanted,
            schemas,
            ..PgChanges::default()
        }
    }

    /// The schemas streamed so far, by relation id.
    pub fn schemas(&self) -> &HashMap<u32, SharedSchema> {
        &self.schemas
    }

    /// Inside a transaction (between Begin and Commit).
    pub fn in_txn(&self) -> bool {
        self.in_txn
    }

    /// Translates the message at `wal_start`; `step` receives what it asks for, in order.
    pub fn on_message(&mut self, wal_start: Lsn, msg: LogicalMessage, step: &mut impl FnMut(Step)) {
        match msg {
            LogicalMessage::Begin { xid, commit_ts, .. } => {
                self.in_txn = true;
                self.tx = (xid, unix_micros_from_pg(commit_ts));
            }
            LogicalMessage::Commit {
                end_lsn, commit_ts, ..
            } => {
                self.in_txn = false;
                step(Step::Commit {
                    end_lsn,
                    commit_us: unix_micros_from_pg(commit_ts),
                });
            }
            LogicalMessage::Relation {
                rel_id,
                namespace,
                name,
                ..
            } if !self.schemas.contains_key(&rel_id)
                && !self.wanted.is_empty()
                && !self
                    .wanted
                    .iter()
                    .any(|(s, t)| *s == namespace && *t == name) =>
            {
                if self.ignored.insert(rel_id) {
                    step(Step::Skipped {
                        table: format!("{namespace}.{name}"),
                    });
                }
            }
            LogicalMessage::Insert { rel_id, .. }
            | LogicalMessage::Update { rel_id, .. }
            | LogicalMessage::Delete { rel_id, .. }
                if self.ignored.contains(&rel_id) => {}
            LogicalMessage::Relation {
                rel_id,
                namespace,
                name,
                replica_identity,
                columns,
            } => {
                if self.relations.get(&rel_id) != Some(&columns) {
                    step(Step::LoadRelation {
                        rel_id,
                        namespace,
                        name,
                        replica_identity,
                        columns,
                    });
                }
            }
            LogicalMessage::Insert { rel_id, new } => {
                step(self.row(rel_id, RowOp::Insert, wal_start, new, None));
            }
            LogicalMessage::Update {
                rel_id,
                old,
                mut new,
            } => {
                let mut moved_from = None;
                if let Some(old) = old {
                    // REPLICA IDENTITY FULL sends old values: use them for unchanged TOAST.
                    for (n, o) in new.iter_mut().zip(&old) {
                        if matches!(n, Cell::UnchangedToast) && matches!(o, Cell::Text(_)) {
                            *n = o.clone();
                        }
                    }
                    let changed = |i: &usize| old.get(*i) != new.get(*i);
                    // A keyless table's row is its content: an update is the old content's
                    // delete and the new content's insert, and one that changes nothing is
                    // nothing.
                    let keyless = self.schemas.get(&rel_id).is_some_and(|s| s.keyless());
                    if keyless && old == new {
                        return;
                    }
                    // The sort key: the key, or a mapping's order_by (whose other columns
                    // come in the old row only under REPLICA IDENTITY FULL).
                    let key_changed = self
                        .schemas
                        .get(&rel_id)
                        .is_some_and(|s| s.sort_indexes().iter().any(changed));
                    if key_changed || keyless {
                        // The (sort) key changed: the row under the old one is gone.
                        moved_from = Some(old.clone());
                        step(self.row(rel_id, RowOp::Delete, wal_start, old, None));
                    }
                }
                let op = if moved_from.is_some() {
                    RowOp::Insert
                } else {
                    RowOp::Update
                };
                step(self.row(rel_id, op, wal_start, new, moved_from));
            }
            LogicalMessage::Delete { rel_id, old } => {
                step(self.row(rel_id, RowOp::Delete, wal_start, old, None));
            }
            LogicalMessage::Truncate { mut rel_ids, .. } => {
                rel_ids.retain(|r| !self.ignored.contains(r));
                if !rel_ids.is_empty() {
                    step(Step::Item(ChangeItem::Truncate {
                        rels: rel_ids,
                        lsn: wal_start,
                        xid: self.tx.0,
                        commit_us: self.tx.1,
                    }));
                }
            }
            LogicalMessage::Type { .. }
            | LogicalMessage::Origin
            | LogicalMessage::Message { .. } => {}
        }
    }

    /// The schema the stream loop loaded for a [`Step::LoadRelation`]: a schema item when it
    /// differs from the one streamed before (a repeat of the same columns changes nothing).
    pub fn relation_loaded(
        &mut self,
        rel_id: u32,
        columns: Vec<RelationColumn>,
        schema: TableSchema,
    ) -> Option<ChangeItem> {
        self.relations.insert(rel_id, columns);
        if self.schemas.get(&rel_id).map(|s| s.as_ref()) == Some(&schema) {
            return None;
        }
        let s = Arc::new(schema);
        self.schemas.insert(rel_id, s.clone());
        Some(ChangeItem::Schema(s))
    }

    fn row(
        &self,
        rel_id: u32,
        op: RowOp,
        version: u64,
        cells: Vec<Cell>,
        moved_from: Option<Vec<Cell>>,
    ) -> Step {
        let mut item = ChangeItem::row(rel_id, op, version, cells, self.tx);
        if let ChangeItem::Row { change, .. } = &mut item {
            change.moved_from = moved_from;
        }
        Step::Item(item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::schema::{Column, PgType};

    #[test]
    fn server_times_convert_without_overflow() {
        assert_eq!(unix_micros_from_pg(0), 946_684_800_000_000);
        assert_eq!(unix_micros_from_pg(i64::MAX), i64::MAX);
    }

    fn t(s: &str) -> Cell {
        Cell::Text(bytes::Bytes::copy_from_slice(s.as_bytes()))
    }

    /// Table 7 `public.t (id int8 key, body text)`.
    fn schema() -> TableSchema {
        let col = |name: &str, is_key: bool, pg_type| Column {
            name: name.into(),
            pg_type,
            nullable: !is_key,
            is_key,
            added_default: None,
            renamed_from: None,
        };
        TableSchema {
            rel_id: 7,
            schema: "public".into(),
            name: "t".into(),
            columns: vec![
                col("id", true, PgType::Int8),
                col("body", false, PgType::Text),
            ],
            ..Default::default()
        }
    }

    fn translator(wanted: &[(&str, &str)]) -> PgChanges {
        let s = Arc::new(schema());
        let wanted = wanted.iter().map(|(a, b)| (a.to_string(), b.to_string()));
        PgChanges::new(wanted.collect(), HashMap::from([(7, s)]))
    }

    fn feed(c: &mut PgChanges, lsn: Lsn, msg: LogicalMessage) -> Vec<Step> {
        let mut out = Vec::new();
        c.on_message(lsn, msg, &mut |s| out.push(s));
        out
    }

    /// A row as the tests compare it: (op, version, cells, moved_from, xid).
    type Row = (RowOp, u64, Vec<Cell>, Option<Vec<Cell>>, u32);

    /// The rows of `steps`.
    fn rows(steps: Vec<Step>) -> Vec<Row> {
        steps
            .into_iter()
            .filter_map(|s| match s {
                Step::Item(ChangeItem::Row { change: c, .. }) => {
                    Some((c.op, c.version, c.cells, c.moved_from, c.xid))
                }
                _ => None,
            })
            .collect()
    }

    fn update_msg(old: Option<Vec<Cell>>, new: Vec<Cell>) -> LogicalMessage {
        LogicalMessage::Update {
            rel_id: 7,
            old,
            new,
        }
    }

    fn begin(c: &mut PgChanges, xid: u32) {
        let begin = LogicalMessage::Begin {
            final_lsn: 0,
            commit_ts: 0,
            xid,
        };
        assert!(feed(c, 1, begin).is_empty());
        assert!(c.in_txn());
    }

    #[test]
    fn rows_carry_their_transaction_and_the_commit_ends_it() {
        let mut c = translator(&[]);
        begin(&mut c, 42);
        let insert = LogicalMessage::Insert {
            rel_id: 7,
            new: vec![t("1"), t("a")],
        };
        assert_eq!(
            rows(feed(&mut c, 100, insert)),
            vec![(RowOp::Insert, 100, vec![t("1"), t("a")], None, 42)]
        );
        let commit = LogicalMessage::Commit {
            commit_lsn: 100,
            end_lsn: 120,
            commit_ts: 1,
        };
        let steps = feed(&mut c, 110, commit);
        assert!(matches!(
            steps[..],
            [Step::Commit {
                end_lsn: 120,
                commit_us: 946_684_800_000_001
            }]
        ));
        assert!(!c.in_txn());
    }

    #[test]
    fn a_key_change_is_the_old_keys_delete_and_an_insert_that_remembers_it() {
        let mut c = translator(&[]);
        begin(&mut c, 5);
        // REPLICA IDENTITY DEFAULT sends the old key (other columns NULL) when it changed.
        let update = update_msg(
            Some(vec![t("1"), Cell::Null]),
            vec![t("2"), Cell::UnchangedToast],
        );
        assert_eq!(
            rows(feed(&mut c, 200, update)),
            vec![
                (RowOp::Delete, 200, vec![t("1"), Cell::Null], None, 5),
                (
                    RowOp::Insert,
                    200,
                    vec![t("2"), Cell::UnchangedToast],
                    Some(vec![t("1"), Cell::Null]),
                    5
                ),
            ]
        );
    }

    #[test]
    fn replica_identity_full_fills_unchanged_toast_from_the_old_row() {
        let mut c = translator(&[]);
        begin(&mut c, 6);
        let update = update_msg(
            Some(vec![t("1"), t("long value")]),
            vec![t("1"), Cell::UnchangedToast],
        );
        assert_eq!(
            rows(feed(&mut c, 300, update)),
            vec![(RowOp::Update, 300, vec![t("1"), t("long value")], None, 6)]
        );
        // Without the old row, the value stays unchanged TOAST (the sink fills it).
        let update = update_msg(None, vec![t("1"), Cell::UnchangedToast]);
        assert_eq!(
            rows(feed(&mut c, 310, update)),
            vec![(
                RowOp::Update,
                310,
                vec![t("1"), Cell::UnchangedToast],
                None,
                6
            )]
        );
    }

    #[test]
    fn unlisted_tables_are_skipped_with_their_truncates() {
        let mut c = translator(&[("public", "t")]);
        let relation = |rel_id, name: &str| LogicalMessage::Relation {
            rel_id,
            namespace: "public".into(),
            name: name.into(),
            replica_identity: b'd',
            columns: vec![],
        };
        let steps = feed(&mut c, 1, relation(9, "other"));
        assert!(matches!(&steps[..], [Step::Skipped { table }] if table == "public.other"));
        // Said once.
        assert!(feed(&mut c, 2, relation(9, "other")).is_empty());
        let insert = LogicalMessage::Insert {
            rel_id: 9,
            new: vec![t("1")],
        };
        assert!(feed(&mut c, 3, insert).is_empty());
        let truncate = LogicalMessage::Truncate {
            rel_ids: vec![9, 7],
            cascade: false,
            restart_identity: false,
        };
        let steps = feed(&mut c, 4, truncate);
        assert!(matches!(
            &steps[..],
            [Step::Item(ChangeItem::Truncate { rels, lsn: 4, .. })] if rels == &vec![7]
        ));
    }

    #[test]
    fn a_relation_is_loaded_once_and_a_changed_schema_streamed() {
        let mut c = translator(&[]);
        let columns = vec![RelationColumn {
            is_key: true,
            name: "id".into(),
            type_oid: 20,
            type_mod: -1,
        }];
        let relation = || LogicalMessage::Relation {
            rel_id: 7,
            namespace: "public".into(),
            name: "t".into(),
            replica_identity: b'd',
            columns: columns.clone(),
        };
        let steps = feed(&mut c, 1, relation());
        assert!(matches!(&steps[..], [Step::LoadRelation { rel_id: 7, .. }]));
        // The same schema as streamed: nothing to send.
        assert!(c.relation_loaded(7, columns.clone(), schema()).is_none());
        // The same columns again: nothing to load.
        assert!(feed(&mut c, 2, relation()).is_empty());
        // A changed schema (a column added) is streamed and kept.
        let mut wider = schema();
        wider.columns.push(wider.columns[1].clone());
        wider.columns[2].name = "extra".into();
        let item = c.relation_loaded(7, columns.clone(), wider.clone());
        assert!(matches!(item, Some(ChangeItem::Schema(s)) if *s == wider));
        assert_eq!(c.schemas()[&7].columns.len(), 3);
    }
}
