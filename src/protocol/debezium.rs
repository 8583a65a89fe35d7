//! TEMPORARY stub (replaced by the real codec).
use crate::protocol::pgoutput::Cell;
use crate::protocol::schema::{Column, TableSchema};
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DecimalMode { Precise, String, Double }
#[derive(Debug, Clone)]
pub struct EncodeOptions { pub schemas: bool, pub decimal: DecimalMode, pub prefix: String, pub database: String }
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op { Read, Create, Update, Delete, Truncate }
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotFlag { False, True, Last }
#[derive(Debug, Clone)]
pub struct SourceInfo { pub lsn: u64, pub tx_id: Option<u32>, pub commit_us: i64, pub snapshot: SnapshotFlag, pub last_commit_lsn: Option<u64> }
#[derive(Debug, Default)]
pub struct EncodeStats { pub unrepresentable: u64 }
pub fn topic_name(prefix: &str, schema: &str, table: &str) -> String { format!("{prefix}.{schema}.{table}") }
pub fn encode_key(_t: &TableSchema, _cells: &[Cell], _o: &EncodeOptions, _stats: &mut EncodeStats) -> Option<Vec<u8>> { None }
#[allow(clippy::too_many_arguments)]
pub fn encode_change(_t: &TableSchema, _op: Op, _before: Option<&[Cell]>, _after: Option<&[Cell]>, _src: &SourceInfo, _now_us: i64, _o: &EncodeOptions, _stats: &mut EncodeStats) -> Vec<u8> { vec![] }
pub fn encode_truncate(_t: &TableSchema, _src: &SourceInfo, _now_us: i64, _o: &EncodeOptions) -> Vec<u8> { vec![] }
#[derive(Debug, PartialEq)]
pub enum Decoded { Change(Change), Truncate { schema: String, table: String, lsn: u64, commit_us: i64 }, Tombstone }
#[derive(Debug, PartialEq)]
pub struct Change { pub schema: String, pub table: String, pub op: Op, pub columns: Vec<Column>, pub before: Option<Vec<Cell>>, pub after: Option<Vec<Cell>>, pub lsn: u64, pub commit_us: i64, pub snapshot: bool }
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DecodeError { #[error("x")] X }
pub fn decode(_topic: &str, _key: Option<&[u8]>, _value: Option<&[u8]>) -> Result<Decoded, DecodeError> { Err(DecodeError::X) }
