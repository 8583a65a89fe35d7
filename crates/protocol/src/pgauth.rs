//! Watches the start of a PostgreSQL connection that runs without TLS and tells when the
//! server asks for a password in a form a man in the middle could read or replay (cleartext,
//! or MD5, whose hash is as good as the password for that user). The client library that
//! answers authentication (tokio-postgres) cannot be told to refuse; a stream that feeds
//! every byte through this watch can.
//!
//! Fed the client's first bytes ([`PlainAuthWatch::sent`]) and the server's bytes
//! ([`PlainAuthWatch::received`]) in order, however they are split. An SSLRequest answered
//! `S` means TLS from the next byte on: the watch stops. It stops too at AuthenticationOk or
//! any message that is not an authentication request.
//!
//! Must never: panic or read past what it was given, whatever the bytes; let an ask for a
//! cleartext or MD5 password pass unreported before the watch has stopped.

/// A password request a passive listener could exploit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlainAsk {
    Cleartext,
    Md5,
}

impl PlainAsk {
    pub fn name(self) -> &'static str {
        match self {
            PlainAsk::Cleartext => "cleartext",
            PlainAsk::Md5 => "MD5",
        }
    }
}

const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before the client's first 8 bytes are known.
    Start,
    /// The client asked for TLS: the server's next byte answers.
    SslAnswer,
    /// Reading a message's tag, length and (for `R`) request code: `hdr[..have]`.
    Header,
    /// Skipping the rest of a message body.
    Body(usize),
    Done,
}

#[derive(Debug, Clone)]
pub struct PlainAuthWatch {
    state: State,
    first: [u8; 8],
    first_len: usize,
    hdr: [u8; 9],
    have: usize,
}

impl Default for PlainAuthWatch {
    fn default() -> Self {
        Self::new()
    }
}

impl PlainAuthWatch {
    pub fn new() -> Self {
        PlainAuthWatch {
            state: State::Start,
            first: [0; 8],
            first_len: 0,
            hdr: [0; 9],
            have: 0,
        }
    }

    /// True once nothing more can be learned (TLS is on, or authentication is over).
    pub fn done(&self) -> bool {
        self.state == State::Done
    }

    /// The client wrote `bytes`.
    pub fn sent(&mut self, bytes: &[u8]) {
        if self.state != State::Start {
            return;
        }
        let n = (8 - self.first_len).min(bytes.len());
        self.first[self.first_len..self.first_len + n].copy_from_slice(&bytes[..n]);
        self.first_len += n;
        if self.first_len == 8 {
            self.state = if self.first == SSL_REQUEST {
                State::SslAnswer
            } else {
                State::Header
            };
        }
    }

    /// The server sent `bytes`; `Some` the first time they complete a cleartext or MD5
    /// password request (the watch then stops).
    pub fn received(&mut self, mut bytes: &[u8]) -> Option<PlainAsk> {
        while !bytes.is_empty() {
            match self.state {
                State::Done => return None,
                // The server spoke before the client's first message was complete: not a
                // PostgreSQL start-up we can follow.
                State::Start => {
                    self.state = State::Done;
                    return None;
                }
                State::SslAnswer => {
                    self.state = if bytes[0] == b'N' {
                        State::Header
                    } else {
                        State::Done
                    };
                    bytes = &bytes[1..];
                }
                State::Body(left) => {
                    let n = left.min(bytes.len());
                    bytes = &bytes[n..];
                    self.state = if left == n {
                        State::Header
                    } else {
                        State::Body(left - n)
                    };
                }
                State::Header => {
                    if self.have == 0 {
                        self.hdr[0] = bytes[0];
                        self.have = 1;
                        bytes = &bytes[1..];
                    }
                    // An authentication request: tag, length and its code.
                    let want = if self.hdr[0] == b'R' { 9 } else { 5 };
                    let n = (want - self.have).min(bytes.len());
                    self.hdr[self.have..self.have + n].copy_from_slice(&bytes[..n]);
                    self.have += n;
                    bytes = &bytes[n..];
                    if self.have < want {
                        return None;
                    }
                    let len =
                        u32::from_be_bytes([self.hdr[1], self.hdr[2], self.hdr[3], self.hdr[4]])
                            as usize;
                    if self.hdr[0] != b'R' {
                        // An error, a notice, a protocol negotiation: authentication is
                        // decided without a password request we could still stop.
                        if self.hdr[0] == b'v' && len >= 4 {
                            self.have = 0;
                            self.state = State::Body(len - 4);
                            continue;
                        }
                        self.state = State::Done;
                        return None;
                    }
                    if len < 8 {
                        self.state = State::Done;
                        return None;
                    }
                    let code =
                        u32::from_be_bytes([self.hdr[5], self.hdr[6], self.hdr[7], self.hdr[8]]);
                    self.have = 0;
                    match code {
                        0 => {
                            self.state = State::Done;
                            return None;
                        }
                        3 => {
                            self.state = State::Done;
                            return Some(PlainAsk::Cleartext);
                        }
                        5 => {
                            self.state = State::Done;
                            return Some(PlainAsk::Md5);
                        }
                        _ => self.state = State::Body(len - 8),
                    }
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn startup() -> Vec<u8> {
        let mut m = vec![0, 0, 0, 12, 0, 3, 0, 0];
        m.extend_from_slice(b"u\0\0\0");
        m
    }

    fn auth(code: u32, extra: &[u8]) -> Vec<u8> {
        let mut m = vec![b'R'];
        m.extend_from_slice(&((8 + extra.len()) as u32).to_be_bytes());
        m.extend_from_slice(&code.to_be_bytes());
        m.extend_from_slice(extra);
        m
    }

    /// Feeds `server` in pieces of `step` bytes; the first ask found.
    fn run(client: &[u8], server: &[u8], step: usize) -> (Option<PlainAsk>, bool) {
        let mut w = PlainAuthWatch::new();
        for c in client.chunks(3) {
            w.sent(c);
        }
        for c in server.chunks(step) {
            if let Some(a) = w.received(c) {
                return (Some(a), w.done());
            }
        }
        (None, w.done())
    }

    #[test]
    fn cleartext_and_md5_asks_are_caught_however_split() {
        for step in 1..12 {
            assert_eq!(
                run(&startup(), &auth(3, &[]), step).0,
                Some(PlainAsk::Cleartext)
            );
            assert_eq!(
                run(&startup(), &auth(5, b"salt"), step).0,
                Some(PlainAsk::Md5)
            );
            // After a refused TLS request too.
            let mut s = vec![b'N'];
            s.extend(auth(3, &[]));
            assert_eq!(run(&SSL_REQUEST, &s, step).0, Some(PlainAsk::Cleartext));
        }
    }

    #[test]
    fn scram_and_ok_pass_and_stop_the_watch() {
        let mut s = auth(10, b"SCRAM-SHA-256\0\0");
        s.extend(auth(11, b"r=abc"));
        s.extend(auth(12, b"v=xyz"));
        s.extend(auth(0, &[]));
        // Whatever follows authentication is not looked at, even an `R` lookalike.
        s.extend(auth(3, &[]));
        for step in 1..20 {
            assert_eq!(run(&startup(), &s, step), (None, true), "step {step}");
        }
    }

    #[test]
    fn tls_accepted_stops_the_watch() {
        let mut s = vec![b'S'];
        s.extend(auth(3, &[]));
        assert_eq!(run(&SSL_REQUEST, &s, 1), (None, true));
    }

    #[test]
    fn an_error_first_stops_the_watch() {
        let mut s = vec![b'E', 0, 0, 0, 6, b'x', 0];
        s.extend(auth(3, &[]));
        assert_eq!(run(&startup(), &s, 2), (None, true));
    }

    #[test]
    fn protocol_negotiation_is_skipped() {
        let mut s = vec![b'v', 0, 0, 0, 12, 0, 0, 0, 0, 0, 0, 0, 0];
        s.extend(auth(5, b"salt"));
        assert_eq!(run(&startup(), &s, 4).0, Some(PlainAsk::Md5));
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut x: u32 = 0x1234_5678;
        for _ in 0..5000 {
            let mut w = PlainAuthWatch::new();
            let mut buf = [0u8; 24];
            for b in buf.iter_mut() {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                *b = x as u8;
            }
            w.sent(&buf[..(x % 12) as usize]);
            w.sent(&buf[..8]);
            let _ = w.received(&buf);
            let _ = w.received(&buf[(x % 24) as usize..]);
        }
    }
}
