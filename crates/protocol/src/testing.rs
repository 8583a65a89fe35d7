//! Helpers of the crate's unit tests. Must never: be compiled outside tests.

/// xorshift: deterministic pseudo-random bytes without a dependency.
pub(crate) fn noise(seed: u64, len: usize, alphabet: &[u8]) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            alphabet[(x % alphabet.len() as u64) as usize]
        })
        .collect()
}

/// A Postgres column of a test table.
pub(crate) fn column(
    name: &str,
    t: crate::schema::PgType,
    nullable: bool,
    key: bool,
) -> crate::schema::Column {
    crate::schema::Column {
        name: name.into(),
        pg_type: t,
        nullable,
        is_key: key,
        added_default: None,
        renamed_from: None,
    }
}

/// A table `public.t` (relation 1) of these columns, keyed by its key columns.
pub(crate) fn table(columns: Vec<crate::schema::Column>) -> crate::schema::TableSchema {
    crate::schema::TableSchema {
        rel_id: 1,
        schema: "public".into(),
        name: "t".into(),
        columns,
        identity: crate::schema::Identity::default(),
        order_by: Vec::new(),
    }
}
