//! X.509 certificates as a TLS client shows them: a small DER reader that takes the server's
//! certificate (the leaf of the chain the handshake presented, as DER) and returns what is worth
//! showing about it (subject, issuer, validity, the subjectAltName DNS names and IP addresses) and
//! the hash that SCRAM's `tls-server-end-point` channel binding needs (RFC 5929 §4.1). It reads
//! the few fields it returns and checks the DER framing of everything it walks past; verifying
//! signatures, chains and names is the TLS library's job, not this one's.
//!
//! Must never: panic, slice out of bounds or recurse, whatever the input (the walk has a fixed
//! depth and no recursion; every length is checked against what is left); read BER (indefinite
//! or non-minimal lengths), lengths of more than 4 octets, or bytes after the certificate; guess a
//! channel-binding hash (an algorithm it does not know gives `None`, as libpq then refuses channel
//! binding); let an attribute value forge structure in a formatted name (separators, quotes and
//! control characters are escaped); or do I/O.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::pgtext::{civil_from_days, days_from_civil};

/// What a client shows about a server's certificate, and what channel binding needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSummary {
    /// The subject's distinguished name, RFC 4514-like but in certificate order (most
    /// significant RDN first, as OpenSSL prints it): `C=US, O=Example, CN=db.example.com`.
    /// `, ` separates RDNs, `+` the attributes of a multi-valued one. CN, O, OU, C, ST, L and
    /// emailAddress go by name, other types as a dotted OID. A value in a string type is shown
    /// as text with `,` `+` `"` `\` `<` `>` `;` (and a leading `#` or space, a trailing space)
    /// backslash-escaped and control, line-separator and bidi characters as `\XX` per UTF-8
    /// byte; any other value (or an invalid string) as `#` and the hex of its DER encoding.
    pub subject: String,
    /// The issuer's distinguished name, in the form of `subject`.
    pub issuer: String,
    /// notBefore, Unix seconds.
    pub not_before: i64,
    /// notAfter, Unix seconds.
    pub not_after: i64,
    /// The subjectAltName dNSName entries, in certificate order.
    pub dns_names: Vec<String>,
    /// The subjectAltName iPAddress entries, in certificate order.
    pub ip_addrs: Vec<IpAddr>,
    /// The hash of `tls-server-end-point` channel binding (RFC 5929 §4.1); `None` when the
    /// signature algorithm names none that it may use (Ed25519, Ed448, SHA-224, unknown).
    pub end_point_hash: Option<EndPointHash>,
}

/// The hash function of RFC 5929 `tls-server-end-point` channel binding: the one of the
/// certificate's signatureAlgorithm, with MD5 and SHA-1 replaced by SHA-256.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndPointHash {
    Sha256,
    Sha384,
    Sha512,
}

/// What was malformed, and where: `what` names the ASN.1 field, `offset` the byte of the DER
/// input where its tag (or, for trailing bytes, the first extra byte) is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum X509Error {
    #[error("{what} at byte {offset}: the input ends inside it")]
    Truncated { what: &'static str, offset: usize },
    #[error("{what} at byte {offset}: an indefinite length (BER, not DER)")]
    IndefiniteLength { what: &'static str, offset: usize },
    #[error("{what} at byte {offset}: a length of {octets} octets (at most 4 are read)")]
    LengthTooLong {
        what: &'static str,
        offset: usize,
        octets: u8,
    },
    #[error("{what} at byte {offset}: a length not in its shortest form (not DER)")]
    NonMinimalLength { what: &'static str, offset: usize },
    #[error("{what} at byte {offset}: a multi-byte tag number (none is read here)")]
    HighTagNumber { what: &'static str, offset: usize },
    #[error("{what} at byte {offset}: expected {expected}, found tag 0x{found:02x}")]
    UnexpectedTag {
        what: &'static str,
        offset: usize,
        expected: &'static str,
        found: u8,
    },
    #[error("{what}: {extra} bytes after its end, from byte {offset}")]
    TrailingBytes {
        what: &'static str,
        offset: usize,
        extra: usize,
    },
    #[error("{what} at byte {offset}: {why}")]
    Invalid {
        what: &'static str,
        offset: usize,
        why: String,
    },
}

// ---------------------------------------------------------------------------------------
// Tags and object identifiers (DER content octets)
// ---------------------------------------------------------------------------------------

const BOOLEAN: u8 = 0x01;
const INTEGER: u8 = 0x02;
const BIT_STRING: u8 = 0x03;
const OCTET_STRING: u8 = 0x04;
const OID: u8 = 0x06;
const UTF8_STRING: u8 = 0x0c;
const NUMERIC_STRING: u8 = 0x12;
const PRINTABLE_STRING: u8 = 0x13;
const TELETEX_STRING: u8 = 0x14;
const IA5_STRING: u8 = 0x16;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;
const VISIBLE_STRING: u8 = 0x1a;
const UNIVERSAL_STRING: u8 = 0x1c;
const BMP_STRING: u8 = 0x1e;
const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
/// `[0] EXPLICIT`: the TBSCertificate's version, RSASSA-PSS-params' hashAlgorithm.
const EXPLICIT_0: u8 = 0xa0;
/// `[3] EXPLICIT`: the TBSCertificate's extensions.
const EXPLICIT_3: u8 = 0xa3;
/// `[1]`, `[2] IMPLICIT BIT STRING`: issuerUniqueID, subjectUniqueID.
const ISSUER_UNIQUE_ID: u8 = 0x81;
const SUBJECT_UNIQUE_ID: u8 = 0x82;
/// GeneralName `[2] IMPLICIT IA5String` and `[7] IMPLICIT OCTET STRING`.
const DNS_NAME: u8 = 0x82;
const IP_ADDRESS: u8 = 0x87;

const OID_CN: &[u8] = &[0x55, 0x04, 0x03];
const OID_C: &[u8] = &[0x55, 0x04, 0x06];
const OID_L: &[u8] = &[0x55, 0x04, 0x07];
const OID_ST: &[u8] = &[0x55, 0x04, 0x08];
const OID_O: &[u8] = &[0x55, 0x04, 0x0a];
const OID_OU: &[u8] = &[0x55, 0x04, 0x0b];
/// 1.2.840.113549.1.9.1
const OID_EMAIL_ADDRESS: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x01];
/// 2.5.29.17
const OID_SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1d, 0x11];

/// 1.2.840.113549.1.1.{4,5,10,11,12,13}: {md5,sha1,sha256,sha384,sha512}WithRSAEncryption and
/// RSASSA-PSS.
const MD5_WITH_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x04];
const SHA1_WITH_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x05];
const RSASSA_PSS: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a];
const SHA256_WITH_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b];
const SHA384_WITH_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c];
const SHA512_WITH_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d];
/// 1.2.840.10045.4.1 and 1.2.840.10045.4.3.{2,3,4}: ecdsa-with-{SHA1,SHA256,SHA384,SHA512}.
const ECDSA_WITH_SHA1: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x01];
const ECDSA_WITH_SHA256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02];
const ECDSA_WITH_SHA384: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03];
const ECDSA_WITH_SHA512: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x04];

/// The hashes RSASSA-PSS-params name: 1.2.840.113549.2.5 (MD5), 1.3.14.3.2.26 (SHA-1),
/// 2.16.840.1.101.3.4.2.{1,2,3} (SHA-256, SHA-384, SHA-512).
const MD5: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x02, 0x05];
const SHA1: &[u8] = &[0x2b, 0x0e, 0x03, 0x02, 0x1a];
const SHA256: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01];
const SHA384: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02];
const SHA512: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03];

// ---------------------------------------------------------------------------------------
// The certificate
// ---------------------------------------------------------------------------------------

/// Reads one DER certificate (all of `der`, nothing after it).
///
/// ```text
/// Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signatureValue BIT STRING }
/// TBSCertificate ::= SEQUENCE { version [0] DEFAULT v1, serialNumber, signature, issuer,
///     validity, subject, subjectPublicKeyInfo, issuerUniqueID [1] OPTIONAL,
///     subjectUniqueID [2] OPTIONAL, extensions [3] OPTIONAL }
/// ```
pub fn summarize(der: &[u8]) -> Result<CertSummary, X509Error> {
    let mut input = Reader::new(der);
    let cert = input.expect(SEQUENCE, "Certificate")?;
    input.finish("Certificate")?;
    let mut cert_fields = cert.reader();
    let tbs = cert_fields.expect(SEQUENCE, "tbsCertificate")?;
    let signature_algorithm = cert_fields.expect(SEQUENCE, "signatureAlgorithm")?;
    cert_fields.expect(BIT_STRING, "signatureValue")?;
    cert_fields.finish("Certificate")?;

    let mut fields = tbs.reader();
    if fields.peek_tag() == Some(EXPLICIT_0) {
        version(fields.next("version")?)?;
    }
    let serial = fields.expect(INTEGER, "serialNumber")?;
    if serial.content.is_empty() {
        return Err(serial.invalid("serialNumber", "an INTEGER without content"));
    }
    let signature = fields.expect(SEQUENCE, "signature")?;
    if signature.raw != signature_algorithm.raw {
        // RFC 5280 §4.1.1.2: the signed copy must be the same, or the hash could be swapped.
        return Err(signature.invalid(
            "signature",
            "differs from the certificate's signatureAlgorithm",
        ));
    }
    let issuer = name(fields.expect(SEQUENCE, "issuer")?)?;
    let (not_before, not_after) = validity(fields.expect(SEQUENCE, "validity")?)?;
    let subject = name(fields.expect(SEQUENCE, "subject")?)?;
    fields.expect(SEQUENCE, "subjectPublicKeyInfo")?;
    if fields.peek_tag() == Some(ISSUER_UNIQUE_ID) {
        fields.next("issuerUniqueID")?;
    }
    if fields.peek_tag() == Some(SUBJECT_UNIQUE_ID) {
        fields.next("subjectUniqueID")?;
    }
    let mut alt_names = AltNames::default();
    if fields.peek_tag() == Some(EXPLICIT_3) {
        extensions(fields.next("extensions")?, &mut alt_names)?;
    }
    fields.finish("tbsCertificate")?;

    Ok(CertSummary {
        subject,
        issuer,
        not_before,
        not_after,
        dns_names: alt_names.dns_names,
        ip_addrs: alt_names.ip_addrs,
        end_point_hash: end_point_hash(signature_algorithm)?,
    })
}

/// `version [0] EXPLICIT INTEGER { v1(0), v2(1), v3(2) }`.
fn version(tagged: Tlv<'_>) -> Result<(), X509Error> {
    let mut inner = tagged.reader();
    let number = inner.expect(INTEGER, "version")?;
    inner.finish("version")?;
    match number.content {
        [0..=2] => Ok(()),
        _ => Err(number.invalid("version", "not v1, v2 or v3")),
    }
}

// ---------------------------------------------------------------------------------------
// Validity
// ---------------------------------------------------------------------------------------

/// `Validity ::= SEQUENCE { notBefore Time, notAfter Time }` as Unix seconds.
fn validity(v: Tlv<'_>) -> Result<(i64, i64), X509Error> {
    let mut times = v.reader();
    let not_before = time(times.next("notBefore")?, "notBefore")?;
    let not_after = time(times.next("notAfter")?, "notAfter")?;
    times.finish("validity")?;
    Ok((not_before, not_after))
}

/// A `Time` as RFC 5280 §4.1.2.5 allows it: UTCTime `YYMMDDHHMMSSZ` (years 50–99 are 19xx,
/// 00–49 20xx) or GeneralizedTime `YYYYMMDDHHMMSSZ`, UTC, whole seconds, a real calendar date.
fn time(t: Tlv<'_>, what: &'static str) -> Result<i64, X509Error> {
    let (digits, form) = match t.tag {
        UTC_TIME => (12, "UTCTime YYMMDDHHMMSSZ"),
        GENERALIZED_TIME => (14, "GeneralizedTime YYYYMMDDHHMMSSZ"),
        found => {
            return Err(X509Error::UnexpectedTag {
                what,
                offset: t.offset,
                expected: "UTCTime or GeneralizedTime",
                found,
            })
        }
    };
    let d = t
        .content
        .strip_suffix(b"Z")
        .filter(|d| d.len() == digits && d.iter().all(u8::is_ascii_digit))
        .ok_or_else(|| t.invalid(what, format!("not {form}")))?;
    let num = |at: usize, n: usize| {
        d.iter()
            .skip(at)
            .take(n)
            .fold(0i64, |a, b| a * 10 + i64::from(b - b'0'))
    };
    let (year, at) = match digits {
        12 => match num(0, 2) {
            yy @ 0..=49 => (2000 + yy, 2),
            yy => (1900 + yy, 2),
        },
        _ => (num(0, 4), 4),
    };
    let (month, day) = (num(at, 2), num(at + 2, 2));
    let (hour, minute, second) = (num(at + 4, 2), num(at + 6, 2), num(at + 8, 2));
    if !(1..=12).contains(&month)
        || !(1..=days_in_month(year, month)).contains(&day)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return Err(t.invalid(what, "not a date and time of the calendar"));
    }
    let days = days_from_civil(year, month as u32, day as u32);
    Ok(days * 86_400 + hour * 3600 + minute * 60 + second)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Unix seconds as `2036-12-03 10:00:00 UTC` (proleptic Gregorian; any `i64`).
pub fn format_utc(unix_secs: i64) -> String {
    let (y, m, d) = civil_from_days(unix_secs.div_euclid(86_400));
    let t = unix_secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        t / 3600,
        t % 3600 / 60,
        t % 60
    )
}

// ---------------------------------------------------------------------------------------
// Names
// ---------------------------------------------------------------------------------------

/// `Name ::= SEQUENCE OF RelativeDistinguishedName`,
/// `RelativeDistinguishedName ::= SET SIZE (1..MAX) OF AttributeTypeAndValue`,
/// `AttributeTypeAndValue ::= SEQUENCE { type OBJECT IDENTIFIER, value ANY }`, formatted as
/// [`CertSummary::subject`] says.
fn name(n: Tlv<'_>) -> Result<String, X509Error> {
    let mut out = String::new();
    let mut rdns = n.reader();
    let mut first_rdn = true;
    while !rdns.is_empty() {
        let rdn = rdns.expect(SET, "RelativeDistinguishedName")?;
        if !first_rdn {
            out.push_str(", ");
        }
        first_rdn = false;
        let mut attributes = rdn.reader();
        if attributes.is_empty() {
            return Err(rdn.invalid("RelativeDistinguishedName", "an empty SET"));
        }
        let mut first_attribute = true;
        while !attributes.is_empty() {
            let attribute = attributes.expect(SEQUENCE, "AttributeTypeAndValue")?;
            if !first_attribute {
                out.push('+');
            }
            first_attribute = false;
            let mut parts = attribute.reader();
            let kind = parts.expect(OID, "attribute type")?;
            let value = parts.next("attribute value")?;
            parts.finish("AttributeTypeAndValue")?;
            match attribute_name(kind.content) {
                Some(short) => out.push_str(short),
                None => out.push_str(
                    &dotted_oid(kind.content)
                        .ok_or_else(|| kind.invalid("attribute type", "a malformed OID"))?,
                ),
            }
            out.push('=');
            match directory_string(&value) {
                Some(text) => escape_value(&mut out, &text),
                None => {
                    out.push('#');
                    push_hex(&mut out, value.raw);
                }
            }
        }
    }
    Ok(out)
}

fn attribute_name(oid: &[u8]) -> Option<&'static str> {
    Some(match oid {
        OID_CN => "CN",
        OID_O => "O",
        OID_OU => "OU",
        OID_C => "C",
        OID_ST => "ST",
        OID_L => "L",
        OID_EMAIL_ADDRESS => "emailAddress",
        _ => return None,
    })
}

/// The text of a value in a string type; `None` for any other type and for a string that is
/// not valid in its type (it is then shown as hex).
fn directory_string(value: &Tlv<'_>) -> Option<String> {
    let c = value.content;
    match value.tag {
        UTF8_STRING => std::str::from_utf8(c).ok().map(str::to_owned),
        PRINTABLE_STRING | IA5_STRING | NUMERIC_STRING | VISIBLE_STRING => c
            .is_ascii()
            .then(|| c.iter().map(|&b| char::from(b)).collect()),
        // T.61 in practice carries Latin-1 (OpenSSL reads it so too).
        TELETEX_STRING => Some(c.iter().map(|&b| char::from(b)).collect()),
        BMP_STRING if c.len() % 2 == 0 => {
            char::decode_utf16(c.chunks_exact(2).map(|p| u16::from_be_bytes([p[0], p[1]])))
                .collect::<Result<String, _>>()
                .ok()
        }
        UNIVERSAL_STRING if c.len() % 4 == 0 => c
            .chunks_exact(4)
            .map(|q| char::from_u32(u32::from_be_bytes([q[0], q[1], q[2], q[3]])))
            .collect(),
        _ => None,
    }
}

/// Appends an attribute value so that it cannot be read as more than one value: RFC 4514's
/// specials backslash-escaped, and every character that could break or reorder a log line
/// (C0/C1 controls, DEL, line and paragraph separators, bidi controls) as `\XX` per UTF-8 byte.
fn escape_value(out: &mut String, value: &str) {
    for (i, c) in value.char_indices() {
        let leading = i == 0;
        let trailing = i + c.len_utf8() == value.len();
        if matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (leading && matches!(c, ' ' | '#'))
            || (trailing && c == ' ')
        {
            out.push('\\');
            out.push(c);
        } else if disturbs_a_line(c) {
            for b in c.encode_utf8(&mut [0; 4]).bytes() {
                let _ = write!(out, "\\{b:02X}");
            }
        } else {
            out.push(c);
        }
    }
}

/// C0 and C1 controls and DEL; LRM, RLM; line and paragraph separators, bidi embeddings and
/// overrides (U+2028–U+202E); bidi isolates.
fn disturbs_a_line(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

fn push_hex(out: &mut String, bytes: &[u8]) {
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
}

/// An OBJECT IDENTIFIER's content as dotted decimal (`2.5.4.5`); `None` when empty, cut off
/// inside a subidentifier, not minimal (a subidentifier starting with 0x80) or with an arc
/// beyond 128 bits.
fn dotted_oid(content: &[u8]) -> Option<String> {
    let mut out = String::new();
    let mut arc: u128 = 0;
    let mut at_start = true;
    for &b in content {
        if (at_start && b == 0x80) || arc > u128::MAX >> 7 {
            return None;
        }
        arc = arc << 7 | u128::from(b & 0x7f);
        at_start = b & 0x80 == 0;
        if at_start {
            if out.is_empty() {
                let (first, second) = match arc {
                    0..=39 => (0, arc),
                    40..=79 => (1, arc - 40),
                    _ => (2, arc - 80),
                };
                let _ = write!(out, "{first}.{second}");
            } else {
                let _ = write!(out, ".{arc}");
            }
            arc = 0;
        }
    }
    (at_start && !out.is_empty()).then_some(out)
}

// ---------------------------------------------------------------------------------------
// Extensions: subjectAltName
// ---------------------------------------------------------------------------------------

#[derive(Default)]
struct AltNames {
    dns_names: Vec<String>,
    ip_addrs: Vec<IpAddr>,
}

/// `extensions [3] EXPLICIT SEQUENCE SIZE (1..MAX) OF Extension`,
/// `Extension ::= SEQUENCE { extnID OBJECT IDENTIFIER, critical BOOLEAN DEFAULT FALSE,
/// extnValue OCTET STRING }`. Only subjectAltName is read (at most one, RFC 5280 §4.2).
fn extensions(tagged: Tlv<'_>, alt_names: &mut AltNames) -> Result<(), X509Error> {
    let mut outer = tagged.reader();
    let list = outer.expect(SEQUENCE, "extensions")?;
    outer.finish("extensions")?;
    let mut items = list.reader();
    if items.is_empty() {
        return Err(list.invalid("extensions", "an empty SEQUENCE"));
    }
    let mut seen_alt_names = false;
    while !items.is_empty() {
        let extension = items.expect(SEQUENCE, "Extension")?;
        let mut parts = extension.reader();
        let id = parts.expect(OID, "extnID")?;
        if parts.peek_tag() == Some(BOOLEAN) {
            let critical = parts.next("critical")?;
            if critical.content.len() != 1 {
                return Err(critical.invalid("critical", "a BOOLEAN that is not one byte"));
            }
        }
        let value = parts.expect(OCTET_STRING, "extnValue")?;
        parts.finish("Extension")?;
        if id.content == OID_SUBJECT_ALT_NAME {
            if seen_alt_names {
                return Err(extension.invalid("Extension", "a second subjectAltName"));
            }
            seen_alt_names = true;
            subject_alt_names(value, alt_names)?;
        }
    }
    Ok(())
}

/// `GeneralNames ::= SEQUENCE SIZE (1..MAX) OF GeneralName`: the dNSName and iPAddress
/// entries; the other kinds are skipped.
fn subject_alt_names(value: Tlv<'_>, alt_names: &mut AltNames) -> Result<(), X509Error> {
    let mut inner = value.reader();
    let list = inner.expect(SEQUENCE, "subjectAltName")?;
    inner.finish("subjectAltName")?;
    let mut names = list.reader();
    if names.is_empty() {
        return Err(list.invalid("subjectAltName", "no names"));
    }
    while !names.is_empty() {
        let name = names.next("GeneralName")?;
        match name.tag {
            DNS_NAME => {
                // Printable ASCII only: no DNS name needs more, and the list goes into logs
                // unescaped.
                if !name.content.iter().all(|b| (0x21..=0x7e).contains(b)) {
                    return Err(name.invalid("dNSName", "not printable ASCII"));
                }
                let text = name.content.iter().map(|&b| char::from(b)).collect();
                alt_names.dns_names.push(text);
            }
            IP_ADDRESS => {
                let ip = match name.content {
                    &[a, b, c, d] => IpAddr::V4(Ipv4Addr::new(a, b, c, d)),
                    octets => match <[u8; 16]>::try_from(octets) {
                        Ok(v6) => IpAddr::V6(Ipv6Addr::from(v6)),
                        Err(_) => {
                            return Err(name.invalid(
                                "iPAddress",
                                format!("{} bytes, not 4 or 16", octets.len()),
                            ))
                        }
                    },
                };
                alt_names.ip_addrs.push(ip);
            }
            // otherName, rfc822Name, x400Address, directoryName, ediPartyName,
            // uniformResourceIdentifier, registeredID.
            0xa0 | 0x81 | 0xa3 | 0xa4 | 0xa5 | 0x86 | 0x88 => {}
            found => {
                return Err(X509Error::UnexpectedTag {
                    what: "GeneralName",
                    offset: name.offset,
                    expected: "a GeneralName ([0] to [8])",
                    found,
                })
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Channel binding: the signature algorithm's hash
// ---------------------------------------------------------------------------------------

/// RFC 5929 §4.1: the hash of the certificate's signatureAlgorithm, MD5 and SHA-1 upgraded to
/// SHA-256; `None` for an algorithm without one hash of the three (EdDSA, SHA-224, unknown).
fn end_point_hash(algorithm: Tlv<'_>) -> Result<Option<EndPointHash>, X509Error> {
    let (oid, params) = algorithm_identifier(algorithm, "signatureAlgorithm")?;
    Ok(match oid {
        MD5_WITH_RSA | SHA1_WITH_RSA | ECDSA_WITH_SHA1 => Some(EndPointHash::Sha256),
        SHA256_WITH_RSA | ECDSA_WITH_SHA256 => Some(EndPointHash::Sha256),
        SHA384_WITH_RSA | ECDSA_WITH_SHA384 => Some(EndPointHash::Sha384),
        SHA512_WITH_RSA | ECDSA_WITH_SHA512 => Some(EndPointHash::Sha512),
        RSASSA_PSS => pss_hash(params)?,
        _ => None,
    })
}

/// `AlgorithmIdentifier ::= SEQUENCE { algorithm OBJECT IDENTIFIER, parameters ANY OPTIONAL }`.
fn algorithm_identifier<'a>(
    algorithm: Tlv<'a>,
    what: &'static str,
) -> Result<(&'a [u8], Option<Tlv<'a>>), X509Error> {
    let mut parts = algorithm.reader();
    let oid = parts.expect(OID, what)?;
    let params = if parts.is_empty() {
        None
    } else {
        Some(parts.next("algorithm parameters")?)
    };
    parts.finish(what)?;
    Ok((oid.content, params))
}

/// The hash of `RSASSA-PSS-params ::= SEQUENCE { hashAlgorithm [0] DEFAULT sha1,
/// maskGenAlgorithm [1] DEFAULT mgf1SHA1, saltLength [2] DEFAULT 20, trailerField [3] DEFAULT
/// 1 }` (RFC 4055 §3.1). No parameters at all name no hash: OpenSSL refuses such a signature
/// (and with it libpq's channel binding), so `None`.
fn pss_hash(params: Option<Tlv<'_>>) -> Result<Option<EndPointHash>, X509Error> {
    let Some(params) = params else {
        return Ok(None);
    };
    if params.tag != SEQUENCE {
        return Err(X509Error::UnexpectedTag {
            what: "RSASSA-PSS-params",
            offset: params.offset,
            expected: "SEQUENCE",
            found: params.tag,
        });
    }
    let mut fields = params.reader();
    let mut hash = SHA1;
    while !fields.is_empty() {
        let field = fields.next("RSASSA-PSS-params")?;
        match field.tag {
            EXPLICIT_0 => {
                let mut inner = field.reader();
                let algorithm = inner.expect(SEQUENCE, "hashAlgorithm")?;
                inner.finish("hashAlgorithm")?;
                hash = algorithm_identifier(algorithm, "hashAlgorithm")?.0;
            }
            0xa1..=0xa3 => {}
            found => {
                return Err(X509Error::UnexpectedTag {
                    what: "RSASSA-PSS-params",
                    offset: field.offset,
                    expected: "[0] to [3]",
                    found,
                })
            }
        }
    }
    Ok(match hash {
        MD5 | SHA1 | SHA256 => Some(EndPointHash::Sha256),
        SHA384 => Some(EndPointHash::Sha384),
        SHA512 => Some(EndPointHash::Sha512),
        _ => None,
    })
}

// ---------------------------------------------------------------------------------------
// DER
// ---------------------------------------------------------------------------------------

/// One DER element.
#[derive(Debug, Clone, Copy)]
struct Tlv<'a> {
    tag: u8,
    /// Where its tag is in the input.
    offset: usize,
    /// Where its content starts in the input.
    content_offset: usize,
    content: &'a [u8],
    /// Tag, length and content.
    raw: &'a [u8],
}

impl<'a> Tlv<'a> {
    /// The elements inside this one.
    fn reader(&self) -> Reader<'a> {
        Reader {
            data: self.content,
            pos: 0,
            base: self.content_offset,
        }
    }

    fn invalid(&self, what: &'static str, why: impl Into<String>) -> X509Error {
        X509Error::Invalid {
            what,
            offset: self.offset,
            why: why.into(),
        }
    }
}

/// A cursor over consecutive DER elements. `pos` never passes `data.len()`.
struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
    /// Where `data` starts in the input, for error offsets.
    base: usize,
}

impl<'a> Reader<'a> {
    fn new(data: &'a [u8]) -> Self {
        Reader {
            data,
            pos: 0,
            base: 0,
        }
    }

    fn rest(&self) -> &'a [u8] {
        self.data.get(self.pos..).unwrap_or_default()
    }

    fn is_empty(&self) -> bool {
        self.rest().is_empty()
    }

    fn peek_tag(&self) -> Option<u8> {
        self.rest().first().copied()
    }

    /// The next element, whatever its tag.
    fn next(&mut self, what: &'static str) -> Result<Tlv<'a>, X509Error> {
        let offset = self.base + self.pos;
        let truncated = || X509Error::Truncated { what, offset };
        let rest = self.rest();
        let [tag, first, after @ ..] = rest else {
            return Err(truncated());
        };
        if tag & 0x1f == 0x1f {
            return Err(X509Error::HighTagNumber { what, offset });
        }
        let (len, len_octets) = match *first {
            n @ 0..=0x7f => (usize::from(n), 0),
            0x80 => return Err(X509Error::IndefiniteLength { what, offset }),
            n @ 0x81..=0x84 => {
                let octets = usize::from(n & 0x7f);
                let bytes = after.get(..octets).ok_or_else(truncated)?;
                let len = bytes.iter().fold(0u64, |l, &b| l << 8 | u64::from(b));
                if bytes.first() == Some(&0) || len < 0x80 {
                    return Err(X509Error::NonMinimalLength { what, offset });
                }
                (usize::try_from(len).map_err(|_| truncated())?, octets)
            }
            n => {
                return Err(X509Error::LengthTooLong {
                    what,
                    offset,
                    octets: n & 0x7f,
                })
            }
        };
        let content = after
            .get(len_octets..)
            .and_then(|a| a.get(..len))
            .ok_or_else(truncated)?;
        // The content is inside `rest`, so the sum fits.
        let header = 2 + len_octets;
        let raw = rest.get(..header + len).ok_or_else(truncated)?;
        self.pos += raw.len();
        Ok(Tlv {
            tag: *tag,
            offset,
            content_offset: offset + header,
            content,
            raw,
        })
    }

    /// The next element, which must have tag `tag`.
    fn expect(&mut self, tag: u8, what: &'static str) -> Result<Tlv<'a>, X509Error> {
        match self.peek_tag() {
            Some(found) if found != tag => Err(X509Error::UnexpectedTag {
                what,
                offset: self.base + self.pos,
                expected: tag_name(tag),
                found,
            }),
            _ => self.next(what),
        }
    }

    /// Fails if anything is left after the elements read (`what` names the container).
    fn finish(&self, what: &'static str) -> Result<(), X509Error> {
        match self.rest().len() {
            0 => Ok(()),
            extra => Err(X509Error::TrailingBytes {
                what,
                offset: self.base + self.pos,
                extra,
            }),
        }
    }
}

fn tag_name(tag: u8) -> &'static str {
    match tag {
        INTEGER => "INTEGER",
        BIT_STRING => "BIT STRING",
        OCTET_STRING => "OCTET STRING",
        OID => "OBJECT IDENTIFIER",
        SEQUENCE => "SEQUENCE",
        SET => "SET",
        _ => "another tag",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    /// The DER inside a PEM block (base64, decoded here to keep the crate free of a dependency).
    fn der(pem: &str) -> Vec<u8> {
        let mut out = Vec::new();
        let (mut acc, mut bits) = (0u32, 0);
        let body = pem.lines().filter(|l| !l.starts_with("-----"));
        for c in body
            .flat_map(str::bytes)
            .filter(|c| !c.is_ascii_whitespace() && *c != b'=')
        {
            let v = match c {
                b'A'..=b'Z' => c - b'A',
                b'a'..=b'z' => c - b'a' + 26,
                b'0'..=b'9' => c - b'0' + 52,
                b'+' => 62,
                b'/' => 63,
                _ => panic!("not base64: {:?}", char::from(c)),
            };
            acc = (acc << 6 | u32::from(v)) & 0xff_ffff;
            bits += 6;
            if bits >= 8 {
                bits -= 8;
                out.push((acc >> bits) as u8);
            }
        }
        out
    }

    fn all_certs() -> Vec<(&'static str, Vec<u8>)> {
        [
            ("EC_CA", EC_CA),
            ("EC_LEAF", EC_LEAF),
            ("RSA_SHA256", RSA_SHA256),
            ("RSA_SHA512", RSA_SHA512),
            ("RSA_PSS", RSA_PSS),
            ("RSA_PSS_SHA1", RSA_PSS_SHA1),
            ("ED25519", ED25519),
            ("STRINGS", STRINGS),
        ]
        .into_iter()
        .map(|(n, pem)| (n, der(pem)))
        .collect()
    }

    // -----------------------------------------------------------------------------------
    // Real certificates (made with OpenSSL 3.0.19; the PEM texts are at the end)
    // -----------------------------------------------------------------------------------

    #[test]
    fn ec_p256_self_signed_ca_with_ip_and_dns_names() {
        let s = summarize(&der(EC_CA)).unwrap();
        assert_eq!(
            s,
            CertSummary {
                subject: "CN=localhost, O=Example".into(),
                issuer: "CN=localhost, O=Example".into(),
                not_before: 1_796_465_668,
                not_after: 2_111_825_668,
                dns_names: vec!["localhost".into()],
                ip_addrs: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
                end_point_hash: Some(EndPointHash::Sha256),
            }
        );
        assert_eq!(format_utc(s.not_before), "2026-12-05 10:14:28 UTC");
        assert_eq!(format_utc(s.not_after), "2036-12-02 10:14:28 UTC");
    }

    #[test]
    fn ec_leaf_signed_by_the_ca_with_sha384() {
        let s = summarize(&der(EC_LEAF)).unwrap();
        assert_eq!(
            s,
            CertSummary {
                subject: "C=US, O=Example, OU=Databases, CN=db.example.com".into(),
                issuer: "CN=localhost, O=Example".into(),
                not_before: 1_796_465_668,
                not_after: 1_867_745_668,
                dns_names: vec!["db.example.com".into(), "*.example.com".into()],
                ip_addrs: vec![
                    IpAddr::V6(Ipv6Addr::LOCALHOST),
                    IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3))
                ],
                end_point_hash: Some(EndPointHash::Sha384),
            }
        );
        assert_eq!(format_utc(s.not_after), "2029-03-09 10:14:28 UTC");
    }

    #[test]
    fn rsa_sha256_with_an_awkward_subject_and_a_generalized_time() {
        let s = summarize(&der(RSA_SHA256)).unwrap();
        let name = r#"C=DE, ST=Berlin, L=Kreuzberg, O=Example GmbH, OU=Platform, OU=DB, CN=Acme\, Inc. \"test\" \<db\>\;\+#x, emailAddress=ops@example.com"#;
        assert_eq!(
            s,
            CertSummary {
                subject: name.into(),
                issuer: name.into(),
                not_before: 1_796_465_675,
                not_after: 3_092_465_675,
                dns_names: vec!["acme.example".into()],
                ip_addrs: vec![],
                end_point_hash: Some(EndPointHash::Sha256),
            }
        );
        assert_eq!(format_utc(s.not_after), "2067-12-30 10:14:35 UTC");
    }

    #[test]
    fn rsa_sha512() {
        let s = summarize(&der(RSA_SHA512)).unwrap();
        assert_eq!(s.subject, "CN=sha512.example");
        assert_eq!(s.issuer, "CN=sha512.example");
        assert_eq!((s.not_before, s.not_after), (1_796_465_668, 1_799_057_668));
        assert_eq!(format_utc(s.not_after), "2027-01-04 10:14:28 UTC");
        assert!(s.dns_names.is_empty() && s.ip_addrs.is_empty());
        assert_eq!(s.end_point_hash, Some(EndPointHash::Sha512));
    }

    #[test]
    fn rsa_pss_takes_the_hash_from_its_parameters() {
        let s = summarize(&der(RSA_PSS)).unwrap();
        assert_eq!(s.subject, "CN=pss.example");
        assert_eq!((s.not_before, s.not_after), (1_796_465_668, 1_828_001_668));
        assert_eq!(s.end_point_hash, Some(EndPointHash::Sha384));
        // Parameters that leave the hash at its default, SHA-1: bound with SHA-256.
        let s = summarize(&der(RSA_PSS_SHA1)).unwrap();
        assert_eq!(s.subject, "CN=pss-sha1.example");
        assert_eq!(s.end_point_hash, Some(EndPointHash::Sha256));
    }

    #[test]
    fn ed25519_has_no_end_point_hash() {
        let s = summarize(&der(ED25519)).unwrap();
        assert_eq!(s.subject, "CN=ed25519.example");
        assert_eq!(s.issuer, "CN=ed25519.example");
        assert_eq!((s.not_before, s.not_after), (1_796_465_668, 1_828_001_668));
        assert_eq!(s.end_point_hash, None);
    }

    /// TeletexString (Latin-1), BMPString, a 4-byte UTF-8 character, an IA5String, a
    /// multi-valued RDN with a type known only by OID, and control characters.
    #[test]
    fn string_types_multi_valued_rdns_and_control_characters() {
        let s = summarize(&der(STRINGS)).unwrap();
        let name =
            r"2.5.4.5=42+CN=café, O=日本, L=🔒 lock, OU=tab\09here\0Anew, emailAddress=a@b.example";
        assert_eq!(s.subject, name);
        assert_eq!(s.issuer, name);
        assert_eq!((s.not_before, s.not_after), (1_796_465_678, 1_828_001_678));
        assert_eq!(s.end_point_hash, None);
    }

    // -----------------------------------------------------------------------------------
    // Synthetic certificates: one field at a time
    // -----------------------------------------------------------------------------------

    fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
        let n = content.len();
        let mut out = vec![tag];
        match n {
            0..=0x7f => out.push(n as u8),
            0x80..=0xff => out.extend([0x81, n as u8]),
            _ => out.extend([0x82, (n >> 8) as u8, n as u8]),
        }
        out.extend_from_slice(content);
        out
    }

    fn seq(parts: &[&[u8]]) -> Vec<u8> {
        tlv(SEQUENCE, &parts.concat())
    }

    fn alg(oid: &[u8], params: Option<&[u8]>) -> Vec<u8> {
        seq(&[&tlv(OID, oid), params.unwrap_or_default()])
    }

    /// An attribute: type OID, value tag, value.
    type Attribute<'a> = (&'a [u8], u8, &'a [u8]);

    /// A Name of RDNs, each a list of attributes.
    fn name_der(rdns: &[&[Attribute<'_>]]) -> Vec<u8> {
        let rdns: Vec<Vec<u8>> = rdns
            .iter()
            .map(|atvs| {
                let atvs: Vec<Vec<u8>> = atvs
                    .iter()
                    .map(|(oid, tag, v)| seq(&[&tlv(OID, oid), &tlv(*tag, v)]))
                    .collect();
                tlv(SET, &atvs.concat())
            })
            .collect();
        tlv(SEQUENCE, &rdns.concat())
    }

    fn cn(value: &str) -> Vec<u8> {
        name_der(&[&[(OID_CN, UTF8_STRING, value.as_bytes())]])
    }

    /// `[3] { SEQUENCE { subjectAltName extension } }` from (tag, content) GeneralNames.
    fn san(names: &[(u8, &[u8])]) -> Vec<u8> {
        let names: Vec<Vec<u8>> = names.iter().map(|(t, c)| tlv(*t, c)).collect();
        let ext = seq(&[
            &tlv(OID, OID_SUBJECT_ALT_NAME),
            &tlv(OCTET_STRING, &seq(&[&names.concat()])),
        ]);
        tlv(EXPLICIT_3, &seq(&[&ext]))
    }

    struct Synth {
        signature_algorithm: Vec<u8>,
        issuer: Vec<u8>,
        subject: Vec<u8>,
        not_before: Vec<u8>,
        not_after: Vec<u8>,
        extensions: Vec<u8>,
    }

    impl Default for Synth {
        fn default() -> Self {
            Synth {
                signature_algorithm: alg(SHA256_WITH_RSA, Some(&[0x05, 0x00])),
                issuer: cn("issuer"),
                subject: cn("subject"),
                not_before: tlv(UTC_TIME, b"240101000000Z"),
                not_after: tlv(GENERALIZED_TIME, b"20500101000000Z"),
                extensions: Vec::new(),
            }
        }
    }

    impl Synth {
        fn der(&self) -> Vec<u8> {
            let spki = seq(&[
                &alg(&[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01], None),
                &tlv(BIT_STRING, &[0]),
            ]);
            let tbs = seq(&[
                &tlv(EXPLICIT_0, &tlv(INTEGER, &[2])),
                &tlv(INTEGER, &[1]),
                &self.signature_algorithm,
                &self.issuer,
                &seq(&[&self.not_before, &self.not_after]),
                &self.subject,
                &spki,
                &self.extensions,
            ]);
            seq(&[&tbs, &self.signature_algorithm, &tlv(BIT_STRING, &[0])])
        }

        fn summarize(&self) -> Result<CertSummary, X509Error> {
            summarize(&self.der())
        }
    }

    #[test]
    fn synthetic_baseline() {
        let s = Synth::default().summarize().unwrap();
        assert_eq!(s.subject, "CN=subject");
        assert_eq!(s.issuer, "CN=issuer");
        assert_eq!(format_utc(s.not_before), "2024-01-01 00:00:00 UTC");
        assert_eq!(format_utc(s.not_after), "2050-01-01 00:00:00 UTC");
        assert_eq!(s.end_point_hash, Some(EndPointHash::Sha256));
    }

    #[test]
    fn end_point_hash_of_every_signature_algorithm() {
        use EndPointHash::*;
        let null: &[u8] = &[0x05, 0x00];
        let hash_alg = |oid: &[u8]| tlv(EXPLICIT_0, &alg(oid, Some(null)));
        let pss = |params: &[u8]| alg(RSASSA_PSS, Some(params));
        let cases: Vec<(&str, Vec<u8>, Option<EndPointHash>)> = vec![
            ("md5WithRSA", alg(MD5_WITH_RSA, Some(null)), Some(Sha256)),
            ("sha1WithRSA", alg(SHA1_WITH_RSA, Some(null)), Some(Sha256)),
            (
                "sha256WithRSA",
                alg(SHA256_WITH_RSA, Some(null)),
                Some(Sha256),
            ),
            (
                "sha384WithRSA",
                alg(SHA384_WITH_RSA, Some(null)),
                Some(Sha384),
            ),
            (
                "sha512WithRSA",
                alg(SHA512_WITH_RSA, Some(null)),
                Some(Sha512),
            ),
            (
                "sha224WithRSA",
                alg(
                    &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0e],
                    Some(null),
                ),
                None,
            ),
            ("ecdsa-with-SHA1", alg(ECDSA_WITH_SHA1, None), Some(Sha256)),
            (
                "ecdsa-with-SHA256",
                alg(ECDSA_WITH_SHA256, None),
                Some(Sha256),
            ),
            (
                "ecdsa-with-SHA384",
                alg(ECDSA_WITH_SHA384, None),
                Some(Sha384),
            ),
            (
                "ecdsa-with-SHA512",
                alg(ECDSA_WITH_SHA512, None),
                Some(Sha512),
            ),
            ("Ed25519", alg(&[0x2b, 0x65, 0x70], None), None),
            ("Ed448", alg(&[0x2b, 0x65, 0x71], None), None),
            ("unknown", alg(&[0x2a, 0x03], None), None),
            ("PSS without parameters", alg(RSASSA_PSS, None), None),
            ("PSS, all defaults", pss(&seq(&[])), Some(Sha256)),
            ("PSS SHA-1", pss(&seq(&[&hash_alg(SHA1)])), Some(Sha256)),
            ("PSS MD5", pss(&seq(&[&hash_alg(MD5)])), Some(Sha256)),
            ("PSS SHA-256", pss(&seq(&[&hash_alg(SHA256)])), Some(Sha256)),
            ("PSS SHA-384", pss(&seq(&[&hash_alg(SHA384)])), Some(Sha384)),
            ("PSS SHA-512", pss(&seq(&[&hash_alg(SHA512)])), Some(Sha512)),
            (
                "PSS SHA-512, no NULL, salt length",
                pss(&seq(&[
                    &tlv(EXPLICIT_0, &alg(SHA512, None)),
                    &tlv(0xa2, &tlv(INTEGER, &[64])),
                ])),
                Some(Sha512),
            ),
            (
                "PSS SHA-224",
                pss(&seq(&[&hash_alg(&[
                    0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x04,
                ])])),
                None,
            ),
        ];
        for (label, algorithm, want) in cases {
            let cert = Synth {
                signature_algorithm: algorithm,
                ..Synth::default()
            };
            assert_eq!(
                cert.summarize().map(|s| s.end_point_hash),
                Ok(want),
                "{label}"
            );
        }
        // Malformed PSS parameters are an error, not a guess.
        for (label, params) in [
            ("not a SEQUENCE", tlv(INTEGER, &[1])),
            ("an unknown field", seq(&[&tlv(0xa4, &[])])),
            (
                "hashAlgorithm not a SEQUENCE",
                seq(&[&tlv(EXPLICIT_0, &tlv(OID, SHA256))]),
            ),
            (
                "two hashAlgorithms in [0]",
                seq(&[&tlv(
                    EXPLICIT_0,
                    &[alg(SHA256, None), alg(SHA256, None)].concat(),
                )]),
            ),
        ] {
            let cert = Synth {
                signature_algorithm: pss(&params),
                ..Synth::default()
            };
            assert!(cert.summarize().is_err(), "{label}");
        }
    }

    #[test]
    fn signature_algorithm_must_match_the_signed_one() {
        let mut der = Synth::default().der();
        // The outer signatureAlgorithm is the last sha256WithRSAEncryption OID: make it SHA-512.
        let at = der
            .windows(SHA256_WITH_RSA.len())
            .rposition(|w| w == SHA256_WITH_RSA)
            .unwrap();
        der[at + SHA256_WITH_RSA.len() - 1] = 0x0d;
        let err = summarize(&der).unwrap_err();
        assert!(
            matches!(
                err,
                X509Error::Invalid {
                    what: "signature",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn times_utc_century_generalized_and_invalid() {
        let at = |t: Vec<u8>| {
            Synth {
                not_before: t,
                ..Synth::default()
            }
            .summarize()
            .map(|s| format_utc(s.not_before))
        };
        let utc = |s: &str| tlv(UTC_TIME, s.as_bytes());
        let gen = |s: &str| tlv(GENERALIZED_TIME, s.as_bytes());
        for (time, want) in [
            (utc("491231235959Z"), "2049-12-31 23:59:59 UTC"),
            (utc("500101000000Z"), "1950-01-01 00:00:00 UTC"),
            (utc("000101000000Z"), "2000-01-01 00:00:00 UTC"),
            (utc("991231235959Z"), "1999-12-31 23:59:59 UTC"),
            (utc("240229120000Z"), "2024-02-29 12:00:00 UTC"),
            (gen("20500101000000Z"), "2050-01-01 00:00:00 UTC"),
            (gen("99991231235959Z"), "9999-12-31 23:59:59 UTC"),
            (gen("19491231000000Z"), "1949-12-31 00:00:00 UTC"),
            (gen("20000229000000Z"), "2000-02-29 00:00:00 UTC"),
        ] {
            assert_eq!(at(time.clone()), Ok(want.to_string()), "{time:?}");
        }
        for bad in [
            utc("4912312359Z"),
            utc("491231235959"),
            utc("491231235959+0000"),
            utc("4912312359590Z"),
            utc("231301000000Z"),
            utc("230001000000Z"),
            utc("230230000000Z"),
            utc("230229000000Z"),
            utc("230431000000Z"),
            utc("230101240000Z"),
            utc("230101006000Z"),
            utc("230101000060Z"),
            utc("2301010000+0Z"),
            utc("23010100000 Z"),
            utc("230101000000z"),
            utc(""),
            gen("19000229000000Z"),
            gen("20240101000000.5Z"),
            gen("202401010000Z"),
            gen("240101000000Z"),
            tlv(UTF8_STRING, b"240101000000Z"),
            tlv(INTEGER, &[1]),
        ] {
            assert!(at(bad.clone()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn hostile_attribute_values_are_escaped() {
        let subject = |v: &[u8]| {
            Synth {
                subject: name_der(&[&[(OID_CN, UTF8_STRING, v)]]),
                ..Synth::default()
            }
            .summarize()
            .unwrap()
            .subject
        };
        for (value, want) in [
            (&b"a, O=Forged"[..], r"CN=a\, O=Forged"),
            (b"a+OU=x", r"CN=a\+OU=x"),
            (b"x\nsubject=CN=root", r"CN=x\0Asubject=CN=root"),
            (b"\r\x00\x1b[31m\x7f", r"CN=\0D\00\1B[31m\7F"),
            (b"q\"uo\\te<>;", r#"CN=q\"uo\\te\<\>\;"#),
            (b"#not hex", r"CN=\#not hex"),
            (b" padded ", r"CN=\ padded\ "),
            (b" ", r"CN=\ "),
            (b"in#side", r"CN=in#side"),
            (b"", "CN="),
            // NEL, LINE SEPARATOR, RIGHT-TO-LEFT OVERRIDE.
            (
                "a\u{85}b\u{2028}c\u{202e}d".as_bytes(),
                r"CN=a\C2\85b\E2\80\A8c\E2\80\AEd",
            ),
            ("日本".as_bytes(), "CN=日本"),
            // Not UTF-8: the value's DER as hex.
            (b"\xff\xfe", "CN=#0c02fffe"),
        ] {
            assert_eq!(subject(value), want, "{value:?}");
        }
    }

    #[test]
    fn string_types_and_values_shown_as_hex() {
        let value = |tag: u8, v: &[u8]| {
            Synth {
                subject: name_der(&[&[(OID_O, tag, v)]]),
                ..Synth::default()
            }
            .summarize()
            .unwrap()
            .subject
        };
        assert_eq!(value(PRINTABLE_STRING, b"Example"), "O=Example");
        assert_eq!(value(IA5_STRING, b"a@b"), "O=a@b");
        assert_eq!(value(NUMERIC_STRING, b"0123"), "O=0123");
        assert_eq!(value(VISIBLE_STRING, b"v"), "O=v");
        assert_eq!(value(PRINTABLE_STRING, b"\xe9"), "O=#1301e9");
        assert_eq!(value(TELETEX_STRING, b"caf\xe9, \x85"), r"O=café\, \C2\85");
        // BMPString: a surrogate pair is one character; an unpaired surrogate or an odd
        // length is not text.
        assert_eq!(
            value(BMP_STRING, &[0x00, 0x41, 0xd8, 0x3d, 0xdd, 0x12]),
            "O=A🔒"
        );
        assert_eq!(value(BMP_STRING, &[0xd8, 0x3d]), "O=#1e02d83d");
        assert_eq!(value(BMP_STRING, &[0x00]), "O=#1e0100");
        assert_eq!(
            value(UNIVERSAL_STRING, &[0, 0, 0, 0x41, 0, 1, 0xf5, 0x12]),
            "O=A🔒"
        );
        assert_eq!(value(UNIVERSAL_STRING, &[0, 0x11, 0, 0]), "O=#1c0400110000");
        // Not a string type at all.
        assert_eq!(value(INTEGER, &[0x2a]), "O=#02012a");
        assert_eq!(value(SEQUENCE, &tlv(UTF8_STRING, b"x")), "O=#30030c0178");
        // Types known only by OID, including a 128-bit arc (2.25 UUID OIDs).
        let dc = [0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x19];
        let uuid_arc = [&[0x69][..], &[0x83; 18], &[0x7f]].concat();
        let subject = Synth {
            subject: name_der(&[
                &[(&dc, IA5_STRING, b"example")],
                &[
                    (&[0x55, 0x04, 0x05], PRINTABLE_STRING, b"42"),
                    (&uuid_arc, OCTET_STRING, b"\x01"),
                ],
            ]),
            ..Synth::default()
        }
        .summarize()
        .unwrap()
        .subject;
        assert_eq!(
            subject,
            format!(
                "0.9.2342.19200300.100.1.25=example, 2.5.4.5=42+2.25.{}=#040101",
                (0..18).fold(0u128, |a, _| a << 7 | 3) << 7 | 0x7f
            )
        );
        assert_eq!(
            dotted_oid(OID_EMAIL_ADDRESS).as_deref(),
            Some("1.2.840.113549.1.9.1")
        );
        assert_eq!(dotted_oid(&[0x2a, 0x86]), None, "cut off");
        assert_eq!(dotted_oid(&[0x2a, 0x80, 0x01]), None, "not minimal");
        assert_eq!(dotted_oid(&[]), None);
        assert_eq!(
            dotted_oid(&[&[0x2a][..], &[0xff; 19], &[0x7f]].concat()),
            None,
            "over 128 bits"
        );
    }

    #[test]
    fn malformed_names() {
        let with_subject = |subject: Vec<u8>| {
            Synth {
                subject,
                ..Synth::default()
            }
            .summarize()
        };
        assert_eq!(with_subject(seq(&[])).unwrap().subject, "", "an empty Name");
        for (label, subject) in [
            ("an empty RDN", seq(&[&tlv(SET, &[])])),
            (
                "an RDN not a SET",
                seq(&[&seq(&[&seq(&[&tlv(OID, OID_CN), &tlv(UTF8_STRING, b"x")])])]),
            ),
            (
                "a value missing",
                seq(&[&tlv(SET, &seq(&[&tlv(OID, OID_CN)]))]),
            ),
            (
                "two values",
                seq(&[&tlv(
                    SET,
                    &seq(&[
                        &tlv(OID, OID_CN),
                        &tlv(UTF8_STRING, b"x"),
                        &tlv(UTF8_STRING, b"y"),
                    ]),
                )]),
            ),
            (
                "a malformed type OID",
                name_der(&[&[(&[0x55, 0x84], UTF8_STRING, b"x")]]),
            ),
            (
                "a type that is not an OID",
                seq(&[&tlv(
                    SET,
                    &seq(&[&tlv(UTF8_STRING, b"CN"), &tlv(UTF8_STRING, b"x")]),
                )]),
            ),
        ] {
            assert!(with_subject(subject).is_err(), "{label}");
        }
    }

    #[test]
    fn subject_alt_names_and_malformed_ones() {
        let with = |names: &[(u8, &[u8])]| {
            Synth {
                extensions: san(names),
                ..Synth::default()
            }
            .summarize()
        };
        let s = with(&[
            (0x81, b"ops@example.com"),
            (DNS_NAME, b"a.example"),
            (0x86, b"https://example.com/"),
            (IP_ADDRESS, &[192, 0, 2, 1]),
            (0x88, &[0x2a, 0x03]),
            (0xa4, &cn("dir")),
            (
                IP_ADDRESS,
                &[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
            ),
            (DNS_NAME, b"*.b.example"),
        ])
        .unwrap();
        assert_eq!(s.dns_names, ["a.example", "*.b.example"]);
        assert_eq!(
            s.ip_addrs,
            [
                "192.0.2.1".parse::<IpAddr>().unwrap(),
                "2001:db8::1".parse().unwrap()
            ]
        );
        for (label, names) in [
            (
                "an IP address of 5 bytes",
                &[(IP_ADDRESS, &[1u8, 2, 3, 4, 5][..])][..],
            ),
            (
                "an IP address and mask (name constraints form)",
                &[(IP_ADDRESS, &[10, 0, 0, 0, 255, 0, 0, 0][..])],
            ),
            ("an empty IP address", &[(IP_ADDRESS, &[][..])]),
            (
                "a newline in a DNS name",
                &[(DNS_NAME, &b"a.example\nforged"[..])],
            ),
            ("a space in a DNS name", &[(DNS_NAME, &b"a example"[..])]),
            (
                "a non-ASCII DNS name",
                &[(DNS_NAME, "é.example".as_bytes())],
            ),
            ("a universal tag", &[(UTF8_STRING, &b"a.example"[..])]),
            ("a constructed dNSName", &[(0xa2, &b""[..])]),
            ("GeneralName [9]", &[(0x89, &b""[..])]),
            ("no names", &[]),
        ] {
            assert!(with(names).is_err(), "{label}");
        }
        // Two subjectAltName extensions.
        let ext = seq(&[
            &tlv(OID, OID_SUBJECT_ALT_NAME),
            &tlv(OCTET_STRING, &seq(&[&tlv(DNS_NAME, b"a")])),
        ]);
        let twice = Synth {
            extensions: tlv(EXPLICIT_3, &seq(&[&ext, &ext])),
            ..Synth::default()
        };
        assert!(matches!(
            twice.summarize(),
            Err(X509Error::Invalid {
                what: "Extension",
                ..
            })
        ));
    }

    #[test]
    fn other_extensions_are_skipped_but_framed() {
        let basic_constraints = seq(&[
            &tlv(OID, &[0x55, 0x1d, 0x13]),
            &tlv(BOOLEAN, &[0xff]),
            &tlv(OCTET_STRING, &seq(&[&tlv(BOOLEAN, &[0xff])])),
        ]);
        let alt = seq(&[
            &tlv(OID, OID_SUBJECT_ALT_NAME),
            &tlv(OCTET_STRING, &seq(&[&tlv(DNS_NAME, b"x.example")])),
        ]);
        let with = |exts: Vec<u8>| {
            Synth {
                extensions: exts,
                ..Synth::default()
            }
            .summarize()
        };
        let s = with(tlv(EXPLICIT_3, &seq(&[&basic_constraints, &alt]))).unwrap();
        assert_eq!(s.dns_names, ["x.example"]);
        for (label, exts) in [
            ("an empty list", tlv(EXPLICIT_3, &seq(&[]))),
            (
                "a list not a SEQUENCE",
                tlv(EXPLICIT_3, &tlv(SET, &basic_constraints)),
            ),
            (
                "a value not an OCTET STRING",
                tlv(
                    EXPLICIT_3,
                    &seq(&[&seq(&[&tlv(OID, &[0x55, 0x1d, 0x13]), &seq(&[])])]),
                ),
            ),
            (
                "a two-byte BOOLEAN",
                tlv(
                    EXPLICIT_3,
                    &seq(&[&seq(&[
                        &tlv(OID, &[0x55, 0x1d, 0x13]),
                        &tlv(BOOLEAN, &[0, 0]),
                        &tlv(OCTET_STRING, &[]),
                    ])]),
                ),
            ),
            (
                "bytes after the value",
                tlv(
                    EXPLICIT_3,
                    &seq(&[&seq(&[
                        &tlv(OID, &[0x55, 0x1d, 0x13]),
                        &tlv(OCTET_STRING, &[]),
                        &tlv(INTEGER, &[0]),
                    ])]),
                ),
            ),
            (
                "bytes after the GeneralNames",
                tlv(
                    EXPLICIT_3,
                    &seq(&[&seq(&[
                        &tlv(OID, OID_SUBJECT_ALT_NAME),
                        &tlv(
                            OCTET_STRING,
                            &[seq(&[&tlv(DNS_NAME, b"a")]), vec![0]].concat(),
                        ),
                    ])]),
                ),
            ),
            (
                "extensions after extensions",
                [
                    tlv(EXPLICIT_3, &seq(&[&alt])),
                    tlv(EXPLICIT_3, &seq(&[&alt])),
                ]
                .concat(),
            ),
        ] {
            assert!(with(exts).is_err(), "{label}");
        }
    }

    #[test]
    fn der_framing_errors() {
        use X509Error::*;
        let good = der(EC_CA);
        let cases: Vec<(&str, Vec<u8>, X509Error)> = vec![
            (
                "empty",
                vec![],
                Truncated {
                    what: "Certificate",
                    offset: 0,
                },
            ),
            (
                "a tag alone",
                vec![0x30],
                Truncated {
                    what: "Certificate",
                    offset: 0,
                },
            ),
            (
                "indefinite length",
                [&[0x30, 0x80][..], &good[2..], &[0, 0]].concat(),
                IndefiniteLength {
                    what: "Certificate",
                    offset: 0,
                },
            ),
            (
                "5-octet length",
                vec![0x30, 0x85, 0, 0, 0, 1, 0xbe],
                LengthTooLong {
                    what: "Certificate",
                    offset: 0,
                    octets: 5,
                },
            ),
            (
                "0xff length",
                vec![0x30, 0xff],
                LengthTooLong {
                    what: "Certificate",
                    offset: 0,
                    octets: 127,
                },
            ),
            (
                "long form for a short length",
                vec![0x30, 0x81, 0x05, 0, 0, 0, 0, 0],
                NonMinimalLength {
                    what: "Certificate",
                    offset: 0,
                },
            ),
            (
                "leading zero octet",
                [&[0x30, 0x83, 0x00][..], &good[2..4], &good[4..]].concat(),
                NonMinimalLength {
                    what: "Certificate",
                    offset: 0,
                },
            ),
            (
                "4 GiB claimed",
                vec![0x30, 0x84, 0xff, 0xff, 0xff, 0xff, 0],
                Truncated {
                    what: "Certificate",
                    offset: 0,
                },
            ),
            (
                "length octets cut off",
                vec![0x30, 0x82, 0x01],
                Truncated {
                    what: "Certificate",
                    offset: 0,
                },
            ),
            (
                "a SET",
                [&[0x31][..], &good[1..]].concat(),
                UnexpectedTag {
                    what: "Certificate",
                    offset: 0,
                    expected: "SEQUENCE",
                    found: 0x31,
                },
            ),
            (
                "a high tag number",
                vec![0x1f, 0x81, 0x00, 0x00],
                UnexpectedTag {
                    what: "Certificate",
                    offset: 0,
                    expected: "SEQUENCE",
                    found: 0x1f,
                },
            ),
            (
                "a byte after the certificate",
                [&good[..], &[0]].concat(),
                TrailingBytes {
                    what: "Certificate",
                    offset: good.len(),
                    extra: 1,
                },
            ),
            (
                "two certificates",
                [&good[..], &good[..]].concat(),
                TrailingBytes {
                    what: "Certificate",
                    offset: good.len(),
                    extra: good.len(),
                },
            ),
        ];
        for (label, input, want) in cases {
            assert_eq!(summarize(&input), Err(want), "{label}");
        }
        // A high tag number where any tag is read: an attribute value.
        let subject = seq(&[&tlv(
            SET,
            &seq(&[&tlv(OID, OID_CN), &[0x1f, 0x81, 0x00, 0x00]]),
        )]);
        let err = Synth {
            subject,
            ..Synth::default()
        }
        .summarize()
        .unwrap_err();
        assert!(
            matches!(
                err,
                HighTagNumber {
                    what: "attribute value",
                    ..
                }
            ),
            "{err}"
        );
        // Unsupported versions and an empty serial number.
        let mut v4 = Synth::default().der();
        let at = v4
            .windows(5)
            .position(|w| w == [0xa0, 0x03, 0x02, 0x01, 0x02])
            .unwrap();
        v4[at + 4] = 3;
        assert!(matches!(
            summarize(&v4),
            Err(Invalid {
                what: "version",
                ..
            })
        ));
    }

    #[test]
    fn error_messages_say_what_and_where() {
        let mut bad = der(EC_CA);
        // The notBefore UTCTime of EC_CA: month 13.
        let at = bad.windows(13).position(|w| w == b"261205101428Z").unwrap();
        bad[at + 2] = b'1';
        bad[at + 3] = b'3';
        let err = summarize(&bad).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "notBefore at byte {}: not a date and time of the calendar",
                at - 2
            )
        );
        assert_eq!(
            summarize(&der(EC_CA)[..100]).unwrap_err().to_string(),
            "Certificate at byte 0: the input ends inside it"
        );
        assert_eq!(
            summarize(&[0x30, 0x80]).unwrap_err().to_string(),
            "Certificate at byte 0: an indefinite length (BER, not DER)"
        );
    }

    #[test]
    fn format_utc_any_i64() {
        assert_eq!(format_utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(format_utc(2_111_911_200), "2036-12-03 10:00:00 UTC");
        assert_eq!(format_utc(-1), "1969-12-31 23:59:59 UTC");
        assert_eq!(format_utc(253_402_300_799), "9999-12-31 23:59:59 UTC");
        assert_eq!(format_utc(951_782_400), "2000-02-29 00:00:00 UTC");
        // The extremes print, whatever they print.
        assert!(format_utc(i64::MAX).ends_with(" UTC"));
        assert!(format_utc(i64::MIN).ends_with(" UTC"));
    }

    // -----------------------------------------------------------------------------------
    // Robustness
    // -----------------------------------------------------------------------------------

    #[test]
    fn every_truncation_of_every_certificate_is_an_error() {
        for (label, cert) in all_certs() {
            assert!(summarize(&cert).is_ok(), "{label}");
            for len in 0..cert.len() {
                assert!(
                    summarize(&cert[..len]).is_err(),
                    "{label} cut to {len} bytes"
                );
            }
        }
    }

    /// Every single-bit flip of every certificate, then a few thousand multi-byte mutations
    /// (xorshift, deterministic): `Ok` or `Err`, never a panic. An `Ok` summary keeps the
    /// promises of the format: no control character in a name.
    #[test]
    fn bit_flips_and_random_mutations_never_panic() {
        let check = |input: &[u8]| {
            if let Ok(s) = summarize(input) {
                for name in [&s.subject, &s.issuer] {
                    assert!(!name.chars().any(char::is_control), "{name:?}");
                }
                assert!(s
                    .dns_names
                    .iter()
                    .all(|d| d.bytes().all(|b| b.is_ascii_graphic())));
                let _ = (format_utc(s.not_before), format_utc(s.not_after));
            }
        };
        let certs = all_certs();
        for (_, cert) in &certs {
            let mut v = cert.clone();
            for i in 0..v.len() {
                for bit in 0..8 {
                    v[i] ^= 1 << bit;
                    check(&v);
                    v[i] ^= 1 << bit;
                }
            }
        }
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..5_000 {
            let (_, cert) = &certs[next() as usize % certs.len()];
            let mut v = cert.clone();
            for _ in 0..1 + next() % 8 {
                let i = next() as usize % v.len();
                // Mostly small values: lengths and tags that stay near plausible.
                v[i] = match next() % 4 {
                    0 => next() as u8,
                    1 => v[i].wrapping_add(1),
                    2 => v[i].wrapping_sub(1),
                    _ => [0x00, 0x30, 0x80, 0x81, 0x84, 0x85, 0xa0, 0xff][next() as usize % 8],
                };
            }
            check(&v);
            // Mutated and cut.
            let cut = next() as usize % (v.len() + 1);
            check(&v[..cut]);
        }
    }

    // -----------------------------------------------------------------------------------
    // The certificates. Made on this machine with OpenSSL 3.0.19 (the CA and leaf keys
    // EC P-256 and P-384, the RSA certificates sharing one RSA-2048 key, the Ed25519 and
    // STRINGS certificates one Ed25519 key); `openssl x509 -noout -subject -issuer -dates
    // -ext subjectAltName -text` printed what each comment says.
    // -----------------------------------------------------------------------------------

    /// `openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -days 3650 -sha256
    /// -subj /CN=localhost/O=Example -addext subjectAltName=IP:127.0.0.1,DNS:localhost
    /// -addext basicConstraints=critical,CA:TRUE`: subject and issuer
    /// `CN = localhost, O = Example`, notBefore `Dec  5 10:14:28 2026 GMT`,
    /// notAfter `Dec  2 10:14:28 2036 GMT` (UTCTime),
    /// `IP Address:127.0.0.1, DNS:localhost`, `ecdsa-with-SHA256`.
    const EC_CA: &str = "
-----BEGIN CERTIFICATE-----
MIIBvjCCAWOgAwIBAgIUaK36N5Q6kOiTOZV47YSr7z+9bD4wCgYIKoZIzj0EAwIw
JjESMBAGA1UEAwwJbG9jYWxob3N0MRAwDgYDVQQKDAdFeGFtcGxlMB4XDTI2MTIw
NTEwMTQyOFoXDTM2MTIwMjEwMTQyOFowJjESMBAGA1UEAwwJbG9jYWxob3N0MRAw
DgYDVQQKDAdFeGFtcGxlMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEqGZXYpkG
mw33f20S5nH1zYkJK+hU88vC+ygJvfW+n1MG89qpIo6YJEEPBJRg0kdP7HgJvOXi
9sLYMZ74HTjTVqNvMG0wHQYDVR0OBBYEFH/MuaXC9DwdxhOFB4quSCOMkpXUMB8G
A1UdIwQYMBaAFH/MuaXC9DwdxhOFB4quSCOMkpXUMBoGA1UdEQQTMBGHBH8AAAGC
CWxvY2FsaG9zdDAPBgNVHRMBAf8EBTADAQH/MAoGCCqGSM49BAMCA0kAMEYCIQCj
TyMo9nP8Cm6EmZr6lO+Zh9YrUmm2a9wQGmZUWaMjpgIhALy6Yj6GSBMnlFFcN+7A
OOY/ZVSvtvF/S2uiEoSLXVM8
-----END CERTIFICATE-----";

    /// A P-384 key's request signed by EC_CA (`openssl x509 -req -CA … -days 825 -sha384`,
    /// `subjectAltName=DNS:db.example.com,DNS:*.example.com,IP:::1,IP:10.1.2.3`): subject
    /// `C = US, O = Example, OU = Databases, CN = db.example.com`, issuer
    /// `CN = localhost, O = Example`, notAfter `Mar  9 10:14:28 2029 GMT`,
    /// `DNS:db.example.com, DNS:*.example.com,
    /// IP Address:0:0:0:0:0:0:0:1, IP Address:10.1.2.3`, `ecdsa-with-SHA384`.
    const EC_LEAF: &str = "
-----BEGIN CERTIFICATE-----
MIICFzCCAb2gAwIBAgIUGFUowewoSAY2BwrQBM8SimFZxFAwCgYIKoZIzj0EAwMw
JjESMBAGA1UEAwwJbG9jYWxob3N0MRAwDgYDVQQKDAdFeGFtcGxlMB4XDTI2MTIw
NTEwMTQyOFoXDTI5MDMwOTEwMTQyOFowTDELMAkGA1UEBhMCVVMxEDAOBgNVBAoM
B0V4YW1wbGUxEjAQBgNVBAsMCURhdGFiYXNlczEXMBUGA1UEAwwOZGIuZXhhbXBs
ZS5jb20wdjAQBgcqhkjOPQIBBgUrgQQAIgNiAAS5tJWfCqvMtmtECMLCq4rMSxSD
w1YVtCvKVg2Ufl/lVYQg8R9RFN7YLhnj/PN/GyoIlZxJJEDdbrqoVbc1GZPuOyXv
K3lbNhoddfnXDpwJSI+jwKwxYKbZHTXXJMa+prijgYUwgYIwQAYDVR0RBDkwN4IO
ZGIuZXhhbXBsZS5jb22CDSouZXhhbXBsZS5jb22HEAAAAAAAAAAAAAAAAAAAAAGH
BAoBAgMwHQYDVR0OBBYEFKELFwZUJHuecgAzxUJRoGBahFS7MB8GA1UdIwQYMBaA
FH/MuaXC9DwdxhOFB4quSCOMkpXUMAoGCCqGSM49BAMDA0gAMEUCIAHCH88qsTII
rl4TDphOML8HSMlTA44A5QgqL9sYgz/VAiEA7hFWicGkdi7XSYW51ajXmkBcBKoj
7+XXh1xPW0fvP44=
-----END CERTIFICATE-----";

    /// `openssl req -x509 -newkey rsa:2048 -days 15000 -sha256
    /// -subj '/C=DE/ST=Berlin/L=Kreuzberg/O=Example GmbH/OU=Platform/OU=DB
    /// /CN=Acme, Inc. "test" <db>;\+#x/emailAddress=ops@example.com'
    /// -addext subjectAltName=DNS:acme.example`: subject and issuer `C = DE, ST = Berlin,
    /// L = Kreuzberg, O = Example GmbH, OU = Platform, OU = DB,
    /// CN = "Acme, Inc. \"test\" <db>;+#x", emailAddress = ops@example.com`, notBefore
    /// `Dec  5 10:14:35 2026 GMT`, notAfter `Dec 30 10:14:35 2067 GMT` (GeneralizedTime),
    /// `DNS:acme.example`, `sha256WithRSAEncryption`.
    const RSA_SHA256: &str = "
-----BEGIN CERTIFICATE-----
MIIEWjCCA0KgAwIBAgIUEXKbRAh1oXaw2cnZRE4BQ8MSMzgwDQYJKoZIhvcNAQEL
BQAwga4xCzAJBgNVBAYTAkRFMQ8wDQYDVQQIDAZCZXJsaW4xEjAQBgNVBAcMCUty
ZXV6YmVyZzEVMBMGA1UECgwMRXhhbXBsZSBHbWJIMREwDwYDVQQLDAhQbGF0Zm9y
bTELMAkGA1UECwwCREIxIzAhBgNVBAMMGkFjbWUsIEluYy4gInRlc3QiIDxkYj47
KyN4MR4wHAYJKoZIhvcNAQkBFg9vcHNAZXhhbXBsZS5jb20wIBcNMjYxMjA1MTAx
NDM1WhgPMjA2NzEyMzAxMDE0MzVaMIGuMQswCQYDVQQGEwJERTEPMA0GA1UECAwG
QmVybGluMRIwEAYDVQQHDAlLcmV1emJlcmcxFTATBgNVBAoMDEV4YW1wbGUgR21i
SDERMA8GA1UECwwIUGxhdGZvcm0xCzAJBgNVBAsMAkRCMSMwIQYDVQQDDBpBY21l
LCBJbmMuICJ0ZXN0IiA8ZGI+OysjeDEeMBwGCSqGSIb3DQEJARYPb3BzQGV4YW1w
bGUuY29tMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAwiCVZKtNWLqZ
6VATvtzSEGB8vYI8LT9F8gttXA9cEyNOADwXU8ZHfmuyHNO4oxQ/siUIYoRzRDqX
bkY17oOpSKmPhKhD0RMOooMQUOZHW3fXBmHLsT0pO23HfIXKBuOcFDLsak0FRkVZ
fDT8MqqfpneHsALgDFqAEG41AtzyaHneAEC6BkVG+rXV6A/XqDLuRXuvHx5UPrAZ
DffrdhT0vmaTXIeGXLm6uIHoiDR6DNPbdiFEJCVuv9cc5Mkt+oXmfHdBrw5r+hjC
evC2EDou4yxuu38jL49cmd2MM6cuXPq7XqFrzHl2VJh2H+LGbX7gBbjIBSIjZO2/
2ixWf/gmAwIDAQABo2wwajAdBgNVHQ4EFgQU7kJZVsTZFbWdGo65ImteYvIDr64w
HwYDVR0jBBgwFoAU7kJZVsTZFbWdGo65ImteYvIDr64wDwYDVR0TAQH/BAUwAwEB
/zAXBgNVHREEEDAOggxhY21lLmV4YW1wbGUwDQYJKoZIhvcNAQELBQADggEBAFoQ
Re7g6UIkUAuqWkyBUwqMY1d1IAJe1bmPrKgldehmLtPrBJSeiLUSZpruuIq9T5/Y
ZvgAPQ69zbSPRUvOLpkxn7uPh9wLnIOCEZsQUrE8vsuxe5ty1vHSK3JEvKSXdcHu
mvBtFaQ1GGoIJufcFaeMWdqFwJDpDV92DGpCC1KlEQspVba9aPU4wR9U2yPoOM41
O9gAoN5TY/+cX9C929agjAN2a1J2gtXfri48cqRtW58q30J0SRY/h3YoLcJiZ1DW
k9iiW9RSSXQqEy6tq/ncWtQujaU/14Urb16sZ0rh67NShmCN/IFGk6jdOez8uoTM
vXh530bvSxumzULxoCw=
-----END CERTIFICATE-----";

    /// `openssl req -x509 -days 30 -sha512 -subj /CN=sha512.example`: notAfter
    /// `Jan  4 10:14:28 2027 GMT`, `sha512WithRSAEncryption`, no extensions.
    const RSA_SHA512: &str = "
-----BEGIN CERTIFICATE-----
MIIDEzCCAfugAwIBAgIUVWIhn4Wg6Ofd4yjdMEfY79iNV74wDQYJKoZIhvcNAQEN
BQAwGTEXMBUGA1UEAwwOc2hhNTEyLmV4YW1wbGUwHhcNMjYxMjA1MTAxNDI4WhcN
MjcwMTA0MTAxNDI4WjAZMRcwFQYDVQQDDA5zaGE1MTIuZXhhbXBsZTCCASIwDQYJ
KoZIhvcNAQEBBQADggEPADCCAQoCggEBAMIglWSrTVi6melQE77c0hBgfL2CPC0/
RfILbVwPXBMjTgA8F1PGR35rshzTuKMUP7IlCGKEc0Q6l25GNe6DqUipj4SoQ9ET
DqKDEFDmR1t31wZhy7E9KTttx3yFygbjnBQy7GpNBUZFWXw0/DKqn6Z3h7AC4Axa
gBBuNQLc8mh53gBAugZFRvq11egP16gy7kV7rx8eVD6wGQ3363YU9L5mk1yHhly5
uriB6Ig0egzT23YhRCQlbr/XHOTJLfqF5nx3Qa8Oa/oYwnrwthA6LuMsbrt/Iy+P
XJndjDOnLlz6u16ha8x5dlSYdh/ixm1+4AW4yAUiI2Ttv9osVn/4JgMCAwEAAaNT
MFEwHQYDVR0OBBYEFO5CWVbE2RW1nRqOuSJrXmLyA6+uMB8GA1UdIwQYMBaAFO5C
WVbE2RW1nRqOuSJrXmLyA6+uMA8GA1UdEwEB/wQFMAMBAf8wDQYJKoZIhvcNAQEN
BQADggEBAGWjwMIOBKXQ915LkDkkyNsdIlsU01UIZyVZJoJwJXfSVpMbmL7qZphC
6hd09tqdzDslAiG/nhg+y0l8kPv4wwmsXWh2BnQ0naBSaHSxFpFTcZ4fOyJ8hvJP
CfxLmKEnUHjJGPxGLgYuqaTIqEMJtysgNiBDfKgnrNdzge8JLVyZq31Nqh6QpRZy
g/1nwJnAe9lNbqm4JWypmrSb1vA409+Lk7vqYKTEDEMNjjJpfUdwHRKw0j+n94e+
jXB5NKslJywt9RZGRUTdaSpwaTQ1hhtzmjkdBH/+Vr7kjZ4DP66OoePq6cESxh7X
Nm5F2JNqSg++ZcaExEGDaaB2ugsVE1U=
-----END CERTIFICATE-----";

    /// `openssl req -x509 -days 365 -sha384 -sigopt rsa_padding_mode:pss -subj /CN=pss.example`:
    /// `rsassaPss`, `Hash Algorithm: sha384`, `Mask Algorithm: mgf1 with sha384`,
    /// `Salt Length: 0xCE`.
    const RSA_PSS: &str = "
-----BEGIN CERTIFICATE-----
MIIDdzCCAiqgAwIBAgIUIlLanqhwg/TclN+s2z7ay1+kum4wQgYJKoZIhvcNAQEK
MDWgDzANBglghkgBZQMEAgIFAKEcMBoGCSqGSIb3DQEBCDANBglghkgBZQMEAgIF
AKIEAgIAzjAWMRQwEgYDVQQDDAtwc3MuZXhhbXBsZTAeFw0yNjEyMDUxMDE0Mjha
Fw0yNzEyMDUxMDE0MjhaMBYxFDASBgNVBAMMC3Bzcy5leGFtcGxlMIIBIjANBgkq
hkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAwiCVZKtNWLqZ6VATvtzSEGB8vYI8LT9F
8gttXA9cEyNOADwXU8ZHfmuyHNO4oxQ/siUIYoRzRDqXbkY17oOpSKmPhKhD0RMO
ooMQUOZHW3fXBmHLsT0pO23HfIXKBuOcFDLsak0FRkVZfDT8MqqfpneHsALgDFqA
EG41AtzyaHneAEC6BkVG+rXV6A/XqDLuRXuvHx5UPrAZDffrdhT0vmaTXIeGXLm6
uIHoiDR6DNPbdiFEJCVuv9cc5Mkt+oXmfHdBrw5r+hjCevC2EDou4yxuu38jL49c
md2MM6cuXPq7XqFrzHl2VJh2H+LGbX7gBbjIBSIjZO2/2ixWf/gmAwIDAQABo1Mw
UTAdBgNVHQ4EFgQU7kJZVsTZFbWdGo65ImteYvIDr64wHwYDVR0jBBgwFoAU7kJZ
VsTZFbWdGo65ImteYvIDr64wDwYDVR0TAQH/BAUwAwEB/zBCBgkqhkiG9w0BAQow
NaAPMA0GCWCGSAFlAwQCAgUAoRwwGgYJKoZIhvcNAQEIMA0GCWCGSAFlAwQCAgUA
ogQCAgDOA4IBAQCKeCxpkXSYkGytRMvhlsV9DmJ4ihENiTBPWAe0vuhUjYdF1pVq
2XgpMgMSPMqPAAioNiIZ/In0FYownmvVr/8TG5HFpYP3g38auqWP7V9xnbFCbkFG
gGpmZUuGnlgb0ccKv+06QF3UVpsePPo19nbOsPMXVBjyBgxgdGDumCYIzOEzzzoG
vjV9/VGw7R1nMxKss+iuvc9HjFLxJFINmPoQL64WpfqwsbCZEFGtLRTdD/tnk352
C0fHnMM4g0AjASTDQxzbw6ok5p8IeHzbfv6vGSbRi5+F8tYPFiCW/76bDHuhSdC8
0DrYDtFz269QUgOFjxFdHNEsMYyvp0iD6Q+m
-----END CERTIFICATE-----";

    /// `openssl req -x509 -days 365 -sha1 -sigopt rsa_padding_mode:pss -subj /CN=pss-sha1.example`:
    /// `rsassaPss`, `Hash Algorithm: sha1 (default)` (the parameters hold only the salt length).
    const RSA_PSS_SHA1: &str = "
-----BEGIN CERTIFICATE-----
MIIDIzCCAgWgAwIBAgIUDaE4VMTw5S6U9QTc3hKxe46shuowEwYJKoZIhvcNAQEK
MAaiBAICAOowGzEZMBcGA1UEAwwQcHNzLXNoYTEuZXhhbXBsZTAeFw0yNjEyMDUx
MDE0MjhaFw0yNzEyMDUxMDE0MjhaMBsxGTAXBgNVBAMMEHBzcy1zaGExLmV4YW1w
bGUwggEiMA0GCSqGSIb3DQEBAQUAA4IBDwAwggEKAoIBAQDCIJVkq01YupnpUBO+
3NIQYHy9gjwtP0XyC21cD1wTI04APBdTxkd+a7Ic07ijFD+yJQhihHNEOpduRjXu
g6lIqY+EqEPREw6igxBQ5kdbd9cGYcuxPSk7bcd8hcoG45wUMuxqTQVGRVl8NPwy
qp+md4ewAuAMWoAQbjUC3PJoed4AQLoGRUb6tdXoD9eoMu5Fe68fHlQ+sBkN9+t2
FPS+ZpNch4Zcubq4geiINHoM09t2IUQkJW6/1xzkyS36heZ8d0GvDmv6GMJ68LYQ
Oi7jLG67fyMvj1yZ3Ywzpy5c+rteoWvMeXZUmHYf4sZtfuAFuMgFIiNk7b/aLFZ/
+CYDAgMBAAGjUzBRMB0GA1UdDgQWBBTuQllWxNkVtZ0ajrkia15i8gOvrjAfBgNV
HSMEGDAWgBTuQllWxNkVtZ0ajrkia15i8gOvrjAPBgNVHRMBAf8EBTADAQH/MBMG
CSqGSIb3DQEBCjAGogQCAgDqA4IBAQC3aVmpUX3KSSf5GrxGvHFhzWP6hpUHawkt
FZT+rdMwLf8gmxH9VOlScCbVbypYwqUIu0iw14J52TQ/32bFe6gknDxtnfsWmmSl
Wa/iPC/w2k2kaUMuFpobwD8Iuz+oaOyyQMhCcoEcIVT9j5OWb6F2x6hhrbszT7Rt
eoFrtjGgELL0NlpuOjartPDQct8n2PGQFnJDH0Es+DamZ8pueJXY9haO1FHU8JPa
3uxZJqIoI9fOehkH1a+HHEJNoc/fasaCTV5ZhXPYDVXSkBL8v5fN+XyG3gC8S/w9
fLqv2oyDfRmk72/QEnApEQzh59A1CKBQkMWwX1FYGay+QmidL46D
-----END CERTIFICATE-----";

    /// `openssl req -x509 -newkey ed25519 -days 365 -subj /CN=ed25519.example`: `ED25519`.
    const ED25519: &str = "
-----BEGIN CERTIFICATE-----
MIIBSDCB+6ADAgECAhR1eQbIN7xGK/2yFfA8MLXXW+QuQTAFBgMrZXAwGjEYMBYG
A1UEAwwPZWQyNTUxOS5leGFtcGxlMB4XDTI2MTIwNTEwMTQyOFoXDTI3MTIwNTEw
MTQyOFowGjEYMBYGA1UEAwwPZWQyNTUxOS5leGFtcGxlMCowBQYDK2VwAyEA3CoQ
l6rs59Om6ox14bUhzpoSLLytvLIXgEnnLkYYQjajUzBRMB0GA1UdDgQWBBSQvyTB
4tpZSX6CuCEqlN/0KsNyiDAfBgNVHSMEGDAWgBSQvyTB4tpZSX6CuCEqlN/0KsNy
iDAPBgNVHRMBAf8EBTADAQH/MAUGAytlcANBAOk3cs4sfXZ3g+jPlGQWIYwCAfMf
/mpMKA8l7gclz4VQSbYIuXjKQn/YZWhMTc1at2QE+YP00M4qmGakVEdANgk=
-----END CERTIFICATE-----";

    /// `openssl req -x509 -config <string_mask=default> -utf8 -multivalue-rdn -days 365
    /// -subj $'/CN=caf\xc3\xa9+serialNumber=42/O=日本/L=🔒 lock/OU=tab\there\nnew
    /// /emailAddress=a@b.example'`
    /// (Ed25519): `serialNumber = 42 + CN = café, O = 日本, L = 🔒 lock, OU = tab\09here\0Anew,
    /// emailAddress = a@b.example` (OpenSSL sorts the SET: serialNumber first); CN and OU are
    /// TeletexStrings, O a BMPString, L a UTF8String, emailAddress an IA5String.
    const STRINGS: &str = "
-----BEGIN CERTIFICATE-----
MIIBmzCCAU0CFArEJMyn4JZUwW0/o4a+UYGdob6jMAUGAytlcDBwMRgwCQYDVQQF
EwI0MjALBgNVBAMUBGNhZukxDTALBgNVBAoeBGXlZywxEjAQBgNVBAcMCfCflJIg
bG9jazEVMBMGA1UECxQMdGFiCWhlcmUKbmV3MRowGAYJKoZIhvcNAQkBFgthQGIu
ZXhhbXBsZTAeFw0yNjEyMDUxMDE0MzhaFw0yNzEyMDUxMDE0MzhaMHAxGDAJBgNV
BAUTAjQyMAsGA1UEAxQEY2Fm6TENMAsGA1UECh4EZeVnLDESMBAGA1UEBwwJ8J+U
kiBsb2NrMRUwEwYDVQQLFAx0YWIJaGVyZQpuZXcxGjAYBgkqhkiG9w0BCQEWC2FA
Yi5leGFtcGxlMCowBQYDK2VwAyEA3CoQl6rs59Om6ox14bUhzpoSLLytvLIXgEnn
LkYYQjYwBQYDK2VwA0EArgXIhm+6BJ66gJkyGcX/GBev0ZhvlCJ5j+swDFkRTgGv
27fQrS8dHfhubJjgapN9PIxcoUgyihbc9ookWTBwCw==
-----END CERTIFICATE-----";
}
