//! `tributary check` for a CDC pipeline: connects to Postgres, ClickHouse or Kafka, and
//! prints the publication and slot it would use or create, each table it would create (the
//! exact DDL) and every type mapping fallback. Must never: change anything.

use crate::cdc::clickhouse_sink::{layout_of, target_table};
use crate::cdc::pg_tables;
use crate::clients::clickhouse::ChClient;
use crate::clients::postgres::publication::{self, Apply};
use crate::clients::postgres::replication::ReplicationConn;
use crate::clients::postgres::{catalog, PgParams};
use crate::clients::tls::TlsInfo;
use crate::config::{mapping_for, CdcPlan, CdcSource, PipelineConfig};
use crate::protocol::chtypes::{
    create_table_sql, layout_mismatch, map_table, name_clash, reserved_column, type_change,
    TypeChange,
};
use std::fmt::Write;

/// What a run of CDC pipeline `p` would do; `kafka` is the line that describes its topics.
pub async fn check(
    p: &PipelineConfig,
    plan: &CdcPlan,
    kafka: Option<String>,
) -> Result<String, String> {
    let mut out = String::new();
    let CdcSource::Postgres(pg) = &plan.source else {
        // Debezium topics into ClickHouse.
        let _ = writeln!(out, "pipeline `{}` (cdc from Kafka)", p.name);
        out.push_str(kafka.as_deref().unwrap_or(""));
        let (_, line) = ChClient::connect_described(&p.clickhouse).await?;
        let _ = writeln!(out, "{line}; tables are created from the events' schemas");
        return Ok(out);
    };
    let _ = writeln!(
        out,
        "pipeline `{}` (cdc{})",
        p.name,
        if kafka.is_some() { " to Kafka" } else { "" }
    );
    let params = PgParams::from_config(pg);
    let (client, tls) = catalog::connect_described(&params)
        .await
        .map_err(|e| e.to_string())?;
    let _ = writeln!(out, "  postgres {}: connected", params.addr());
    let _ = writeln!(
        out,
        "    catalog connection: {}",
        describe_tls(tls.as_ref())
    );
    // The replication connection has pg_hba.conf lines of its own (`replication`).
    let repl = ReplicationConn::connect(&params)
        .await
        .map_err(|e| format!("replication connection: {e}"))?;
    let _ = writeln!(
        out,
        "    replication connection: {}; authenticated by {}",
        describe_tls(repl.tls.as_ref()),
        repl.auth
    );
    repl.close().await;
    let ch = match &kafka {
        Some(line) => {
            out.push_str(line);
            None
        }
        None => {
            let (ch, line) = ChClient::connect_described(&p.clickhouse).await?;
            let _ = writeln!(out, "{line}");
            Some(ch)
        }
    };
    let exists: bool = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1)",
            &[&pg.publication],
        )
        .await
        .map_err(|e| e.to_string())?
        .get(0);
    let _ = writeln!(
        out,
        "  publication `{}`: {}",
        pg.publication,
        if exists { "exists" } else { "will be created" }
    );
    // What a run would publish, worked out by doing it in a transaction rolled back.
    let wanted = pg_tables::wanted(pg, &p.tables);
    let mut types = catalog::TypeResolver::default();
    let fail = |e: crate::clients::postgres::PgError| format!("pipeline `{}`: {e}", p.name);
    let specs = pg_tables::specs(&client, &params, &mut types, &wanted, &p.tables)
        .await
        .map_err(fail)?;
    let published =
        publication::ensure_publication(&client, &params, &pg.publication, &specs, Apply::DryRun)
            .await
            .map_err(fail)?;
    let mut schemas = Vec::new();
    for t in &published {
        schemas.push(
            pg_tables::replicated(&client, &params, &mut types, t, &specs, &p.tables)
                .await
                .map_err(fail)?,
        );
        if let Some(cols) = t
            .columns
            .as_ref()
            .filter(|_| mapping_for(&p.tables, &t.schema, &t.name).is_some())
        {
            let _ = writeln!(out, "    {}: columns ({})", t.qualified(), cols.join(", "));
        }
        if let Some(f) = &t.filter {
            let _ = writeln!(out, "    {}: rows WHERE {f}", t.qualified());
        }
    }
    catalog::check_keys(&schemas).map_err(|e| e.to_string())?;
    let slot = catalog::slot_state(&client, &params, &pg.slot)
        .await
        .map_err(|e| e.to_string())?;
    let _ = writeln!(
        out,
        "  slot `{}`: {}",
        pg.slot,
        match slot {
            Some(s) => format!(
                "exists (plugin {}, confirmed {:?}, active {})",
                s.plugin,
                s.confirmed_flush.map(crate::protocol::pgoutput::fmt_lsn),
                s.active
            ),
            None => "will be created, with an initial snapshot".into(),
        }
    );
    let Some(ch) = ch else {
        let prefix = p
            .kafka_sink
            .as_ref()
            .map(|k| k.topic_prefix.as_str())
            .unwrap_or("");
        for s in &schemas {
            let _ = writeln!(
                out,
                "  {} -> topic {}",
                s.qualified(),
                crate::protocol::debezium::topic_name(prefix, &s.schema, &s.name)
            );
        }
        return Ok(out);
    };
    // The clashes the sink would refuse at start, all named at once.
    let names: Vec<String> = schemas
        .iter()
        .map(|s| {
            target_table(
                mapping_for(&p.tables, &s.schema, &s.name),
                &p.clickhouse.table_template,
                s,
            )
        })
        .collect();
    let mut clashes = Vec::new();
    for (i, s) in schemas.iter().enumerate() {
        if let Some(col) = reserved_column(s) {
            clashes.push(format!(
                "{}: column `{col}` has the name of a column tributary adds",
                s.qualified()
            ));
        }
        for j in i + 1..schemas.len() {
            if let Some(why) = name_clash(&names[i], &names[j]) {
                clashes.push(format!(
                    "{} (`{}`) and {} (`{}`): {why}",
                    s.qualified(),
                    names[i],
                    schemas[j].qualified(),
                    names[j]
                ));
            }
        }
    }
    if !clashes.is_empty() {
        return Err(format!(
            "pipeline `{}`: tables that cannot be replicated as named (use clickhouse.table_template, e.g. \"{{schema}}_{{table}}\", or rename):\n  {}",
            p.name,
            clashes.join("\n  ")
        ));
    }
    for s in &schemas {
        let mapping = mapping_for(&p.tables, &s.schema, &s.name);
        let cols = map_table(s, &ch.caps, p.clickhouse.json_as);
        let layout = layout_of(mapping, s);
        let name = target_table(mapping, &p.clickhouse.table_template, s);
        let existing = ch.table_columns(&name).await.map_err(|e| e.to_string())?;
        let exists = existing.is_some();
        let _ = writeln!(
            out,
            "  {} -> {}.{} ({})",
            s.qualified(),
            ch.database,
            name,
            if exists { "exists" } else { "will be created" }
        );
        let _ = writeln!(out, "    key: {}", identity(&client, s).await?);
        let _ = writeln!(
            out,
            "    {}",
            create_table_sql(&ch.database, &name, &cols, &ch.caps, &layout)
        );
        for c in cols.iter().filter(|c| c.note.is_some()) {
            let _ = writeln!(
                out,
                "    note: {}: {}",
                c.name,
                c.note.as_deref().unwrap_or("")
            );
        }
        // What a start would change in (or refuse of) a table that exists.
        if exists {
            if let Some((sorting, partition)) =
                ch.table_keys(&name).await.map_err(|e| e.to_string())?
            {
                if let Some(why) = layout_mismatch(&cols, &layout, &sorting, &partition) {
                    let _ = writeln!(
                        out,
                        "    refused: the ClickHouse table {why} (the pipeline would stop)"
                    );
                }
            }
        }
        for (c, have) in cols.iter().filter_map(|c| {
            let have = existing.as_ref()?.iter().find(|(n, _)| n == &c.name)?;
            Some((c, &have.1))
        }) {
            match type_change(have, &c.ch_type) {
                TypeChange::Same => {}
                TypeChange::Widen(to) => {
                    let _ = writeln!(out, "    will widen {}: {have} -> {to}", c.name);
                }
                TypeChange::Incompatible => {
                    let _ = writeln!(
                        out,
                        "    refused: {} is {have} in ClickHouse; Postgres's type now maps to {} (not a widening): the pipeline would stop",
                        c.name, c.ch_type
                    );
                }
            }
        }
    }
    Ok(out)
}

/// `tls: TLS 1.3 (…); certificate …, expires …; verified: …`, or that there is no TLS.
fn describe_tls(tls: Option<&TlsInfo>) -> String {
    match tls {
        Some(t) => format!("tls: {}", t.describe()),
        None => "no TLS (sslmode = disable, or `prefer` and the server has none)".into(),
    }
}

/// How the rows of `s` are identified: `primary key (id)`, or `replica identity index
/// (code)`, and what Postgres sends of an old row (`REPLICA IDENTITY FULL`: every column).
async fn identity(
    client: &tokio_postgres::Client,
    s: &crate::protocol::schema::TableSchema,
) -> Result<String, String> {
    let ident: i8 = client
        .query_one(
            "SELECT relreplident::\"char\" FROM pg_class WHERE oid = $1",
            &[&s.rel_id],
        )
        .await
        .map_err(|e| e.to_string())?
        .get(0);
    let keys: Vec<&str> = s
        .columns
        .iter()
        .filter(|c| c.is_key)
        .map(|c| c.name.as_str())
        .collect();
    let keys = keys.join(", ");
    Ok(match ident as u8 {
        b'i' => format!("replica identity index ({keys})"),
        b'f' => format!("primary key ({keys}); REPLICA IDENTITY FULL (old rows sent whole)"),
        b'n' => format!("primary key ({keys}); REPLICA IDENTITY NOTHING (updates and deletes cannot be replicated)"),
        _ => format!("primary key ({keys})"),
    })
}
