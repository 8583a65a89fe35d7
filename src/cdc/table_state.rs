//! How far each table's copy has come, as recorded in the pipeline's state (the ClickHouse
//! `_tributary_state` table or the Kafka state topic) under `table:<schema>.<table>`, bound to
//! the slot's incarnation (the snapshot marker `<slot>@<lsn>`): `<incarnation>|done`, or
//! `<incarnation>|copying|<key>` with the key columns' values of the last row copied (their
//! Postgres text, TSV-escaped, tab-separated), or `<incarnation>|ranges|` and one line per key
//! range of a table copied by several workers at once (see [`RangeCopy`]). A value of another
//! incarnation is no progress: that slot's stream is gone, so its copy must be taken again.
//! Pure: no I/O.
//!
//! Must never: read a copy of another incarnation as progress, or lose a key value's bytes
//! (a key may hold tabs, newlines and backslashes).

use crate::protocol::pgtext::{tsv_escape, unescape_tsv};

/// A table's copy in the current incarnation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableCopy {
    /// Not started (or recorded for another incarnation).
    Pending,
    /// Rows up to this key (the key columns' values, in key order) are copied.
    Copying {
        after: Vec<String>,
    },
    /// Copied in key ranges, each by one worker at a time.
    Ranges(Vec<RangeCopy>),
    Done,
}

/// One key range of a table's copy: the rows with a key above `lo` (none: from the first)
/// and up to `hi` inclusive (none: to the last), copied up to `at` (the key of the last row
/// copied; none: nothing yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeCopy {
    pub lo: Option<Vec<String>>,
    pub at: Option<Vec<String>>,
    pub hi: Option<Vec<String>>,
    pub done: bool,
}

impl RangeCopy {
    /// The ranges between `bounds` (keys in ascending order): the first up to the first
    /// bound, each next one above a bound and up to the next, the last above the last bound.
    pub fn between(bounds: &[Vec<String>]) -> Vec<RangeCopy> {
        let mut out = Vec::with_capacity(bounds.len() + 1);
        let mut lo: Option<Vec<String>> = None;
        for b in bounds {
            out.push(RangeCopy {
                lo: lo.clone(),
                at: None,
                hi: Some(b.clone()),
                done: false,
            });
            lo = Some(b.clone());
        }
        out.push(RangeCopy {
            lo,
            at: None,
            hi: None,
            done: false,
        });
        out
    }

    /// Where the next chunk of the range starts: above this key (none: at the first row).
    pub fn after(&self) -> Option<&Vec<String>> {
        self.at.as_ref().or(self.lo.as_ref())
    }
}

/// A key's values as one field: TSV-escaped and tab-joined, then escaped again (no tab or
/// newline left); `*` for none, `=` before a key.
fn key_field(key: &Option<Vec<String>>) -> String {
    match key {
        None => "*".to_string(),
        Some(k) => {
            let mut once = Vec::new();
            join_key(&mut once, k);
            let mut twice = b"=".to_vec();
            tsv_escape(&mut twice, &once);
            String::from_utf8_lossy(&twice).into_owned()
        }
    }
}

/// Reads a [`key_field`] (`Err`: not one).
fn parse_key_field(f: &str) -> Result<Option<Vec<String>>, ()> {
    if f == "*" {
        return Ok(None);
    }
    let once = unescape_tsv(f.strip_prefix('=').ok_or(())?);
    Ok(Some(once.split('\t').map(unescape_tsv).collect()))
}

/// The key columns' values, TSV-escaped and tab-separated.
fn join_key(out: &mut Vec<u8>, key: &[String]) {
    for (i, v) in key.iter().enumerate() {
        if i > 0 {
            out.push(b'\t');
        }
        tsv_escape(out, v.as_bytes());
    }
}

/// The state key of table `qualified` (`schema.table`).
pub fn state_key(qualified: &str) -> String {
    format!("table:{qualified}")
}

impl TableCopy {
    /// The recorded `value` read in `incarnation`.
    pub fn parse(value: Option<&str>, incarnation: &str) -> TableCopy {
        let Some(rest) = value.and_then(|v| v.strip_prefix(incarnation)) else {
            return TableCopy::Pending;
        };
        if rest == "|done" {
            return TableCopy::Done;
        }
        if let Some(lines) = rest.strip_prefix("|ranges|") {
            // A line that does not read is no progress for the whole table.
            let ranges: Result<Vec<RangeCopy>, ()> = lines
                .split('\n')
                .map(|l| {
                    let f: Vec<&str> = l.split('\t').collect();
                    let [state, lo, at, hi] = f[..] else {
                        return Err(());
                    };
                    Ok(RangeCopy {
                        lo: parse_key_field(lo)?,
                        at: parse_key_field(at)?,
                        hi: parse_key_field(hi)?,
                        done: match state {
                            "d" => true,
                            "c" => false,
                            _ => return Err(()),
                        },
                    })
                })
                .collect();
            return ranges.map_or(TableCopy::Pending, TableCopy::Ranges);
        }
        match rest.strip_prefix("|copying|") {
            Some(key) => TableCopy::Copying {
                after: key.split('\t').map(unescape_tsv).collect(),
            },
            None => TableCopy::Pending,
        }
    }

    /// What to record for it in `incarnation` (`Pending` has nothing to record).
    pub fn format(&self, incarnation: &str) -> Option<String> {
        match self {
            TableCopy::Pending => None,
            TableCopy::Done => Some(format!("{incarnation}|done")),
            TableCopy::Ranges(ranges) => {
                let lines: Vec<String> = ranges
                    .iter()
                    .map(|r| {
                        format!(
                            "{}\t{}\t{}\t{}",
                            if r.done { "d" } else { "c" },
                            key_field(&r.lo),
                            key_field(&r.at),
                            key_field(&r.hi)
                        )
                    })
                    .collect();
                Some(format!("{incarnation}|ranges|{}", lines.join("\n")))
            }
            TableCopy::Copying { after } => {
                let mut key = Vec::new();
                join_key(&mut key, after);
                Some(format!(
                    "{incarnation}|copying|{}",
                    String::from_utf8_lossy(&key)
                ))
            }
        }
    }
}

/// The `tables` state entry: which tables the pipeline replicated at its last start, in
/// `incarnation`. A table with a complete copy that was not among them was out of the
/// configuration for a while: its changes of that time were not streamed, so it is copied
/// again.
pub fn tables_entry<'a>(
    incarnation: &str,
    tables: impl Iterator<Item = &'a str>,
) -> (String, String) {
    let mut v = format!("{incarnation}|");
    for (i, t) in tables.enumerate() {
        if i > 0 {
            v.push('\n');
        }
        let mut esc = Vec::new();
        tsv_escape(&mut esc, t.as_bytes());
        v.push_str(&String::from_utf8_lossy(&esc));
    }
    ("tables".to_string(), v)
}

/// A table the sink stopped (a schema change ClickHouse cannot follow) is recorded as
/// `<incarnation>|stopped|<reason>`: its changes are skipped from then on, and a copy of the
/// table is what brings it back (a later start copies it again: read as [`TableCopy::Pending`]).
/// The value to record for a stop, `current` being the table's recorded value (its
/// incarnation is kept; none recorded: none).
pub fn stopped_value(current: Option<&str>, reason: &str) -> String {
    let inc = current.and_then(|v| v.split('|').next()).unwrap_or("");
    // One line: the reason is shown as it is on the status page and in logs.
    let reason: String = reason
        .chars()
        .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
        .collect();
    format!("{inc}|stopped|{reason}")
}

/// The reason of a recorded stop, if `value` records one (in any incarnation).
pub fn stopped_reason(value: &str) -> Option<&str> {
    // The incarnation has no `|`; a copy's recorded key may hold anything after it.
    value.split_once('|')?.1.strip_prefix("stopped|")
}

/// The tables of a [`tables_entry`] recorded in `incarnation` (`None`: none recorded in it).
pub fn parse_tables(value: Option<&str>, incarnation: &str) -> Option<Vec<String>> {
    let list = value?.strip_prefix(incarnation)?.strip_prefix('|')?;
    Some(if list.is_empty() {
        Vec::new()
    } else {
        list.split('\n').map(unescape_tsv).collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_ignores_other_incarnations() {
        let inc = "s@0/16B3748";
        let copying = TableCopy::Copying {
            after: vec!["7".into(), "a\tb\\c\nd".into()],
        };
        for c in [TableCopy::Done, copying] {
            let v = c.format(inc).unwrap();
            assert_eq!(TableCopy::parse(Some(&v), inc), c, "{v}");
            // The same value under another slot incarnation is no progress.
            assert_eq!(
                TableCopy::parse(Some(&v), "s@0/20000000"),
                TableCopy::Pending
            );
        }
        assert_eq!(TableCopy::parse(None, inc), TableCopy::Pending);
        assert_eq!(TableCopy::parse(Some("garbage"), inc), TableCopy::Pending);
        assert_eq!(TableCopy::Pending.format(inc), None);
        assert_eq!(state_key("public.t"), "table:public.t");
    }

    #[test]
    fn ranges_round_trip_with_any_key_bytes() {
        let inc = "s@0/16B3748";
        let bounds = vec![
            vec!["7".to_string(), "a\tb\\c\nd".to_string()],
            vec!["9".to_string(), "*".to_string()],
            vec!["=".to_string(), String::new()],
        ];
        let mut ranges = RangeCopy::between(&bounds);
        assert_eq!(ranges.len(), 4);
        assert_eq!(
            (ranges[0].lo.as_ref(), ranges[0].hi.as_ref()),
            (None, Some(&bounds[0]))
        );
        assert_eq!(
            (ranges[1].lo.as_ref(), ranges[1].hi.as_ref()),
            (Some(&bounds[0]), Some(&bounds[1]))
        );
        assert_eq!(
            (ranges[3].lo.as_ref(), ranges[3].hi.as_ref()),
            (Some(&bounds[2]), None)
        );
        assert_eq!(ranges[1].after(), Some(&bounds[0]));
        ranges[1].at = Some(vec!["8".into(), "x|ranges|y".into()]);
        ranges[2].done = true;
        assert_eq!(ranges[1].after(), ranges[1].at.as_ref());
        let c = TableCopy::Ranges(ranges);
        let v = c.format(inc).unwrap();
        assert_eq!(TableCopy::parse(Some(&v), inc), c, "{v}");
        assert_eq!(TableCopy::parse(Some(&v), "s@0/2"), TableCopy::Pending);
        // One range line that does not read: no progress at all.
        assert_eq!(
            TableCopy::parse(Some(&format!("{v}\nx")), inc),
            TableCopy::Pending
        );
        assert_eq!(
            TableCopy::parse(Some(&format!("{inc}|ranges|c\t*\t*\tnot-a-key")), inc),
            TableCopy::Pending
        );
        // No bounds: one range over the whole table.
        assert_eq!(
            RangeCopy::between(&[]),
            vec![RangeCopy {
                lo: None,
                at: None,
                hi: None,
                done: false
            }]
        );
    }

    #[test]
    fn a_stop_keeps_the_incarnation_and_reads_as_a_copy_to_take() {
        let inc = "s@0/16B3748";
        let v = stopped_value(Some("s@0/16B3748|copying|5"), "type\nchanged");
        assert_eq!(v, "s@0/16B3748|stopped|type changed");
        assert_eq!(stopped_reason(&v), Some("type changed"));
        assert_eq!(TableCopy::parse(Some(&v), inc), TableCopy::Pending);
        assert_eq!(stopped_value(None, "r"), "|stopped|r");
        assert_eq!(stopped_reason("s@0/1|done"), None);
        // A copy position whose key holds the word is no stop.
        assert_eq!(stopped_reason("s@0/1|copying|a|stopped|b"), None);
    }

    #[test]
    fn table_lists_round_trip_in_their_incarnation() {
        let (k, v) = tables_entry("s@0/1", ["public.a", "my s.we\nird"].into_iter());
        assert_eq!(k, "tables");
        assert_eq!(
            parse_tables(Some(&v), "s@0/1"),
            Some(vec!["public.a".to_string(), "my s.we\nird".to_string()])
        );
        assert_eq!(parse_tables(Some(&v), "s@0/2"), None);
        let (_, empty) = tables_entry("s@0/1", std::iter::empty());
        assert_eq!(parse_tables(Some(&empty), "s@0/1"), Some(Vec::new()));
    }
}
