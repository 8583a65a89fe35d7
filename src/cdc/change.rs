//! The CDC pipeline's messages: the change stream every source produces (rows, schemas,
//! truncates, in ordered chunks) and the one message type of the sink edge, shared by the
//! ClickHouse and Kafka sinks. Sinks never see pgoutput or Debezium: only these types.
//!
//! Must never: carry anything a sink would need to ask the source about (a chunk is complete
//! in itself, its schema items before its rows).

use crate::flow::edge::Permit;
use crate::protocol::chtypes::{ChColumn, RowForm};
use crate::protocol::pgoutput::{Cell, Lsn};
use crate::protocol::schema::SharedSchema;
use ractor::RpcReplyPort;
use std::sync::Arc;
use tracing::Span;

/// One change of one row. `version` orders the changes of a row (the WAL position of the
/// change; 0 for snapshot rows).
#[derive(Debug)]
pub struct RowChange {
    pub op: RowOp,
    pub version: u64,
    /// Every column of the table in order (for deletes: the key columns, others NULL).
    pub cells: Vec<Cell>,
    /// The transaction's id and commit time (µs since the Unix epoch; 0 when unknown, as for
    /// snapshot rows), for sinks that describe the source (Debezium's `source` block).
    pub xid: u32,
    pub commit_us: i64,
    /// For the new row of a key change: the row before it (its old key's cells, others NULL).
    /// Its unchanged TOAST values are the old row's.
    pub moved_from: Option<Vec<Cell>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowOp {
    /// A row of the initial snapshot.
    Snapshot,
    Insert,
    Update,
    Delete,
}

impl RowChange {
    pub fn is_delete(&self) -> bool {
        self.op == RowOp::Delete
    }

    /// The columns whose value Postgres did not resend (unchanged TOAST values).
    pub fn unchanged_toast(&self) -> Vec<usize> {
        self.cells
            .iter()
            .enumerate()
            .filter(|(_, c)| matches!(c, Cell::UnchangedToast))
            .map(|(i, _)| i)
            .collect()
    }
}

#[derive(Debug)]
pub enum ChangeItem {
    /// The table's schema, before its first row or after it changed.
    Schema(SharedSchema),
    Row {
        rel_id: u32,
        change: RowChange,
    },
    /// TRUNCATE of these tables, at `lsn` in transaction `xid` (committed at `commit_us`).
    Truncate {
        rels: Vec<u32>,
        lsn: u64,
        xid: u32,
        commit_us: i64,
    },
    /// A snapshot of these tables follows: clear what an earlier attempt left.
    SnapshotBegin(Vec<u32>),
    /// `rows` snapshot rows of table `rel_id` at `version`, already in ClickHouse's `form`
    /// for `columns` with `_version` and `_is_deleted` (a passthrough copy's TabSeparated,
    /// see `protocol::passthrough`, or a binary copy's RowBinary, see `protocol::rowbinary`):
    /// only for the ClickHouse sink, which gave the columns.
    Block {
        rel_id: u32,
        columns: Arc<Vec<ChColumn>>,
        rows: usize,
        version: u64,
        form: RowForm,
        body: bytes::Bytes,
    },
}

/// A table's ClickHouse columns as the sink writes them, for a copy sent in blocks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkColumns {
    pub cols: Arc<Vec<ChColumn>>,
    /// ClickHouse's table has exactly these types, not only types that take their values (a
    /// column Postgres narrowed, or one that no longer takes NULL, keeps its wider type
    /// there): a RowBinary block must match the table's types byte for byte, while text is
    /// read into whatever type the column has.
    pub exact: bool,
}

impl ChangeItem {
    /// A row change of table `rel_id` in transaction `tx` (xid, commit time in µs since the
    /// Unix epoch; `(0, 0)` for snapshot rows).
    pub fn row(rel_id: u32, op: RowOp, version: u64, cells: Vec<Cell>, tx: (u32, i64)) -> Self {
        ChangeItem::Row {
            rel_id,
            change: RowChange {
                op,
                version,
                cells,
                xid: tx.0,
                commit_us: tx.1,
                moved_from: None,
            },
        }
    }
}

/// An ordered slice of the change stream.
pub struct ChangeChunk {
    pub items: Vec<ChangeItem>,
    /// End LSN of the last transaction that this chunk completes, if any.
    pub commit: Option<Lsn>,
    /// Commit times (µs since the Unix epoch) of the transactions completed here.
    pub commit_times: Vec<i64>,
    /// The stream was behind (a backlog) and the server has just said it waits for more WAL:
    /// a batching sink (ClickHouse) flushes at once instead of waiting out the batch's age.
    pub caught_up: bool,
    /// Root span of this chunk's trace (created at the source).
    pub trace: Span,
    /// Open from the moment the chunk was offered to the edge until the sink took it.
    pub queue_span: Span,
}

pub enum SinkMsg {
    Changes(ChangeChunk, Permit),
    /// A wake-up: the batch's age timer, a background insert's end, the progress line.
    Tick,
    /// Flush everything taken in; reply with the acknowledged LSN.
    Drain(RpcReplyPort<Lsn>),
    /// Flush everything taken in, then record these (key, value) pairs durably in the
    /// pipeline's state (`snapshot`: the marker, `<slot>@<lsn>` once the snapshot is complete
    /// and `pending:<slot>` before a new one starts; `table:<schema>.<table>`: a table's copy,
    /// see `postgres_source.rs`).
    WriteState(Vec<(String, String)>, RpcReplyPort<Result<(), String>>),
    /// Record these (key, value) pairs with the next flush, after everything taken in before
    /// them is written, without a flush of their own (a copy's progress: fewer, larger
    /// inserts), then say so on the sender. A later value of a key replaces one not yet
    /// recorded.
    RecordState(
        Vec<(String, String)>,
        Permit,
        tokio::sync::oneshot::Sender<()>,
    ),
    /// The recorded values of these keys, in order.
    ReadState(
        Vec<String>,
        RpcReplyPort<Result<Vec<Option<String>>, String>>,
    ),
    /// Flush everything taken in, then delete from table `rel` every row whose latest version
    /// is below `below` (a resync's copy wrote every row Postgres has at `below` or above:
    /// the rest are rows Postgres no longer has); reply with how many.
    Purge {
        rel: u32,
        below: u64,
        /// Only the rows of these keys (their canonical text, see `protocol::verify`): a
        /// repair of single keys; `None`: every row.
        only: Option<Vec<String>>,
        reply: RpcReplyPort<Result<u64, String>>,
    },
    /// The ClickHouse columns of table `rel` as the sink writes them now, with the schema
    /// they were made from, for a passthrough copy of it (`None`: not to be written in blocks:
    /// a sink of other messages, a table without a key, stopped, or not known yet).
    Columns(u32, RpcReplyPort<Option<(SharedSchema, SinkColumns)>>),
    /// A task of the sink failed (a Kafka delivery): the sink fails with this reason.
    Fail(String),
}
