//! Framing of the Postgres wire protocol as the replication connection reads it: a tag byte,
//! a 4-byte big-endian length that counts itself, the body. Pure: bytes in, lengths out.
//!
//! Must never: take a length no server sends (below the length field's own 4 bytes, which
//! would cut a frame short of its header, or above [`MAX_FRAME`], which would wait for
//! gigabytes), or say a frame is complete before all its bytes are there.

/// The largest message we take: a 1 GiB value (Postgres's limit for one field) and its row.
pub const MAX_FRAME: usize = (1 << 30) + (1 << 20);

/// Length of the complete frame at the start of `buf` (tag included), if it is all there;
/// an error for a length no server sends.
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, String> {
    if buf.len() < 5 {
        return Ok(None);
    }
    let field = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    if !(4..=MAX_FRAME).contains(&field) {
        return Err(format!(
            "message {:?} with length {field} (a server sends 4 to {MAX_FRAME})",
            buf[0] as char
        ));
    }
    let len = field + 1;
    Ok((buf.len() >= len).then_some(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_lengths_no_server_sends_are_refused() {
        assert_eq!(frame_len(b"d\0\0"), Ok(None));
        assert_eq!(frame_len(b"d\0\0\0\x05x"), Ok(Some(6)));
        assert_eq!(frame_len(b"d\0\0\0\x06x"), Ok(None), "incomplete");
        assert_eq!(frame_len(b"c\0\0\0\x04"), Ok(Some(5)), "an empty body");
        // A length below its own 4 bytes would cut the frame short of its header.
        for bad in [b"d\0\0\0\x00", b"d\0\0\0\x03"] {
            assert!(frame_len(bad).is_err());
        }
        assert!(frame_len(b"d\xff\xff\xff\xff").is_err(), "4 GiB");
    }
}
