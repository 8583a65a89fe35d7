#!/usr/bin/env python3
"""ClickHouse HTTP interface (port 8123 protocol) in front of an embedded chdb session.

Purpose: let tributary and its tests talk to the *current* ClickHouse engine (chdb-core 26.9,
the whole engine in-process) exactly as they would to a real ClickHouse server over HTTP.

What this front must never do: pretend success. Every query is executed by the engine and every
engine error comes back as a ClickHouse error (HTTP 4xx/5xx, `X-ClickHouse-Exception-Code`,
body `Code: N. DB::Exception: ...`). Anything the front cannot do faithfully (an input format it
does not handle, an unknown compression method, a bad checksum, `readonly`) is refused with a
ClickHouse-style error, never answered with a fake 200.

What the Rust `clickhouse` crate 0.15.3 sends (read from its source, checked on the wire):
  * Queries (`query()`): POST, SQL in the body (Content-Length), URL params
    `default_format=RowBinaryWithNamesAndTypes` (fetch with validation) / `RowBinary` /
    the format of `fetch_bytes(F)`, `database=`, every client/query setting as `name=value`,
    `role=` per role. With `.param()` the body is instead `multipart/form-data` with the
    fields `query` and `param_<name>`.  User/password in `X-ClickHouse-User`/`X-ClickHouse-Key`.
  * Compression (`Compression::Lz4`, the default with feature lz4): queries carry
    `Accept-Encoding: lz4` and NO `enable_http_compression` param (since 25.10 the server
    default is 1). The crate decodes a response with `Content-Encoding: lz4` as the standard
    LZ4 *frame* format (magic 0x184D2204), `zstd` as a zstd frame; no Content-Encoding = plain.
    Inserts carry `decompress=1` and send the body in ClickHouse's compressed-block framing:
    [16-byte CityHash128 v1.0.2 of the rest][0x82][u32 LE size incl. 9-byte header]
    [u32 LE raw size][LZ4 block]; checksum written as (hi64 LE, lo64 LE) of the Python
    clickhouse-cityhash value. Inserts send no Accept-Encoding. `compress=1` is never sent.
  * Typed inserts (`insert::<T>()`, validation on): first `DESCRIBE TABLE t` with
    `describe_include_subcolumns=0` (RowBinaryWithNamesAndTypes response), then POST
    `?query=INSERT INTO t(cols) FORMAT RowBinaryWithNamesAndTypes[&decompress=1]` with a
    chunked body. `insert_formatted_with(sql)` sends `?query=<sql>` and the data the same way.
  * Responses read: status + `X-ClickHouse-Exception-Code` (error if either says so; the
    body is the message), `X-ClickHouse-Summary` (JSON object of string values),
    `X-ClickHouse-Exception-Tag` (only for mid-stream errors; this front never streams).

Inserts with data (`INSERT INTO t [(cols)] [SETTINGS ..] FORMAT F`) are stored by writing the
data to a temp file and running `INSERT INTO t (cols) FROM INFILE '<tmp>' COMPRESSION 'none'
[SETTINGS ..] FORMAT F` in the engine: the engine's own insert path, so omitted JSONEachRow
fields get the column DEFAULTs and RowBinaryWithNamesAndTypes headers are checked against the
table, as on a real server (a `SELECT * FROM file(..., structure)` insert loses the DEFAULTs).
"""
import argparse, bz2, gzip, json, lzma, os, re, signal, struct, sys, tempfile, threading
import time, uuid, zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

import lz4.block
import lz4.frame
import zstandard
from chdb import session as chdb_session
from clickhouse_cityhash.cityhash import CityHash128

# Input formats the insert path handles (canonical names; aliases map onto them).
INSERT_FORMATS = {f.lower(): f for f in (
    "RowBinary", "RowBinaryWithNamesAndTypes", "JSONEachRow", "TabSeparated",
    "TabSeparatedWithNames", "CSV")}
INSERT_FORMATS.update({"tsv": "TabSeparated", "tsvwithnames": "TabSeparatedWithNames"})
# chdb's Python API turns these "formats" into Python objects: not ClickHouse output formats.
NOT_CH_FORMATS = {"dataframe", "arrowtable", "debug"}
# URL parameters of the HTTP interface that are not engine settings.
HTTP_PARAMS = {
    "query", "database", "default_format", "user", "password", "quota_key", "query_id",
    "session_id", "session_timeout", "session_check", "compress", "decompress",
    "enable_http_compression", "http_zlib_compression_level", "wait_end_of_query",
    "send_progress_in_http_headers", "http_headers_progress_interval_ms", "buffer_size",
    "http_response_buffer_size", "stacktrace", "role", "client_protocol_version",
    "network_compression_method"}
# ClickHouse's exceptionCodeToHTTPStatus (src/Server/HTTP/exceptionCodeToHTTPStatus.cpp).
HTTP_STATUS = {194: 401, 192: 403, 193: 403, 516: 403, 512: 403, 497: 403, 229: 413, 48: 501,
               209: 503, 76: 503, 439: 503, 381: 411, 159: 408, 779: 415}
HTTP_STATUS.update({c: 400 for c in (36, 427, 6, 25, 26, 38, 41, 72, 441, 675, 676, 27, 376, 15,
                                     44, 37, 123, 8, 167, 168, 223, 62, 117, 53, 321)})
HTTP_STATUS.update({c: 404 for c in (60, 46, 47, 50, 56, 81, 115, 152, 63, 73, 336, 78, 511)})
CODE_NAMES = {33: "CANNOT_READ_ALL_DATA", 39: "TOO_LARGE_SIZE_COMPRESSED",
              40: "CHECKSUM_DOESNT_MATCH", 48: "NOT_IMPLEMENTED", 62: "SYNTAX_ERROR",
              89: "UNKNOWN_COMPRESSION_METHOD", 115: "UNKNOWN_SETTING", 164: "READONLY",
              271: "CANNOT_DECOMPRESS", 432: "UNKNOWN_CODEC", 1001: "STD_EXCEPTION"}
CONTENT_TYPES = [("tabseparated", "text/tab-separated-values; charset=UTF-8"),
                 ("tsv", "text/tab-separated-values; charset=UTF-8"),
                 ("csv", "text/csv; charset=UTF-8; header=absent"),
                 ("json", "application/json; charset=UTF-8"),
                 ("xml", "application/xml; charset=UTF-8"),
                 ("pretty", "text/plain; charset=UTF-8"),
                 ("values", "text/plain; charset=UTF-8"), ("vertical", "text/plain; charset=UTF-8"),
                 ("markdown", "text/markdown; charset=UTF-8")]
IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MAX_BLOCK = 1 << 20


class CHError(Exception):
    """An error to report the ClickHouse way."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code, self.message = code, message


def ch_error(code, text):
    """A CHError whose message ends with the error name, as ClickHouse writes it."""
    return CHError(code, f"{text}. ({CODE_NAMES.get(code, 'UNKNOWN')})")


def from_engine(exc, tmp_path=None):
    """Turn a chdb exception into a CHError with the engine's own code and message."""
    text = str(exc).strip()
    m = re.match(r"Code: (\d+)\. DB::Exception: (.*)$", text, re.S)
    if not m:
        return ch_error(1001, text or type(exc).__name__)
    code, msg = int(m.group(1)), m.group(2)
    # FROM INFILE wraps the parser's exception once more: keep the inner one.
    inner = re.match(r"Code: %d\. DB::Exception: (.*) \(version [^)]*\)\. \(\w+\)$" % code, msg, re.S)
    if inner:
        msg = inner.group(1)
    if tmp_path:  # the temp file is our mechanism, not part of the client's request
        msg = msg.replace(f": (in file/uri {tmp_path})", "").replace(f" {tmp_path}", " <body>")
        msg = msg.replace(": data for INSERT was parsed from file", "")
    return CHError(code, msg)


def quote_ident(name):
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def quote_str(value):
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


# ---------- compression ----------

def cityhash_bytes(block):
    h = CityHash128(block)
    return struct.pack("<QQ", h >> 64, h & 0xFFFFFFFFFFFFFFFF)


def decode_native_frames(buf):
    """Decode ClickHouse's compressed-block framing (the body of a `decompress=1` request)."""
    out, pos, n = [], 0, len(buf)
    while pos < n:
        if n - pos < 25:
            raise ch_error(33, f"Cannot read all data: compressed block header truncated "
                               f"({n - pos} bytes left, 25 needed)")
        method, csize, usize = struct.unpack_from("<BII", buf, pos + 16)
        if csize < 9 or csize > 0x40000000:
            raise ch_error(39, f"Too large size_compressed_without_checksum: {csize}. "
                               f"Most likely corrupted data")
        if pos + 16 + csize > n:
            raise ch_error(33, f"Cannot read all data: compressed block of {csize} bytes "
                               f"truncated ({n - pos - 16} bytes left)")
        block = buf[pos + 16:pos + 16 + csize]
        want, got = cityhash_bytes(block), buf[pos:pos + 16]
        if want != got:
            raise ch_error(40, f"Checksum doesn't match: corrupted data. Reference: "
                               f"0x{want.hex()}. Actual: 0x{got.hex()}. Size of compressed "
                               f"block: {csize}")
        payload = block[9:]
        try:
            if method == 0x82:
                data = lz4.block.decompress(payload, uncompressed_size=usize)
            elif method == 0x90:
                data = zstandard.ZstdDecompressor().decompress(payload, max_output_size=usize)
            elif method == 0x02:
                data = payload
            else:
                raise ch_error(432, f"Unknown codec family code: {method}")
        except (lz4.block.LZ4BlockError, zstandard.ZstdError) as e:
            raise ch_error(271, f"Cannot decompress block (method 0x{method:02x}): {e}")
        if len(data) != usize:
            raise ch_error(271, f"Cannot decompress: block holds {len(data)} bytes, header "
                                f"says {usize}")
        out.append(data)
        pos += 16 + csize
    return b"".join(out)


def encode_native_frames(data):
    """ClickHouse compressed-block framing with LZ4 (the response to `compress=1`)."""
    out = []
    for i in range(0, len(data), MAX_BLOCK):
        raw = data[i:i + MAX_BLOCK]
        comp = lz4.block.compress(raw, store_size=False)
        block = struct.pack("<BII", 0x82, 9 + len(comp), len(raw)) + comp
        out.append(cityhash_bytes(block) + block)
    return b"".join(out)


def decode_content(encoding, body):
    """Decode a request body sent with `Content-Encoding`."""
    enc = encoding.strip().lower()
    try:
        if enc in ("", "identity", "none"):
            return body
        if enc == "gzip":
            return gzip.decompress(body)
        if enc == "deflate":
            return zlib.decompress(body)
        if enc in ("zstd", "zst"):
            return zstandard.ZstdDecompressor().decompressobj().decompress(body)
        if enc == "lz4":
            return lz4.frame.decompress(body)
        if enc in ("xz", "lzma"):
            return lzma.decompress(body)
        if enc in ("bz2", "bzip2"):
            return bz2.decompress(body)
    except Exception as e:  # noqa: BLE001 - any codec failure is the client's data
        raise ch_error(271, f"Cannot decompress request body ({enc}): {e}")
    raise ch_error(89, f"Unknown compression method '{encoding}' in Content-Encoding")


RESPONSE_ENCODERS = [  # ClickHouse's order of preference for Accept-Encoding
    ("gzip", gzip.compress), ("deflate", zlib.compress), ("xz", lzma.compress),
    ("zstd", lambda d: zstandard.ZstdCompressor().compress(d)),
    ("lz4", lz4.frame.compress), ("bz2", bz2.compress)]


# ---------- SQL scanning (only what is needed to find an INSERT's data) ----------

def _tokens(s, pos):
    """Yield (kind, text, start, end) tokens of `s` from `pos`, skipping spaces and comments."""
    n = len(s)
    while pos < n:
        c = s[pos]
        if c.isspace():
            pos += 1
        elif s.startswith("--", pos):
            end = s.find("\n", pos)
            pos = n if end < 0 else end + 1
        elif s.startswith("/*", pos):
            end = s.find("*/", pos + 2)
            pos = n if end < 0 else end + 2
        elif c in "`\"'":
            end = pos + 1
            while end < n:
                if s[end] == "\\":
                    end += 2
                elif s[end] == c and s[end + 1:end + 2] == c:  # doubled quote
                    end += 2
                elif s[end] == c:
                    break
                else:
                    end += 1
            yield ("quoted", s[pos:end + 1], pos, end + 1)
            pos = end + 1
        elif c.isalnum() or c == "_" or ord(c) > 127:
            end = pos
            while end < n and (s[end].isalnum() or s[end] in "_$" or ord(s[end]) > 127):
                end += 1
            yield ("word", s[pos:end], pos, end)
            pos = end
        else:
            yield ("punct", c, pos, pos + 1)
            pos += 1


def parse_insert(buf):
    """For `INSERT INTO t [(cols)] [SETTINGS ..] FORMAT F<data>` return
    (target_sql, middle_sql, format, data_offset); None for any other statement."""
    s = buf[:1 << 20].decode("latin-1")  # 1:1 bytes->chars, so offsets are byte offsets
    it = _tokens(s, 0)
    nxt = lambda: next(it, None)  # noqa: E731
    word = lambda t: t[1].upper() if t and t[0] == "word" else ""  # noqa: E731
    if word(nxt()) != "INSERT" or word(nxt()) != "INTO":
        return None
    t = nxt()
    if word(t) == "TABLE":
        t = nxt()
    if not t or t[0] == "punct" or word(t) == "FUNCTION":
        return None
    start, end, t = t[2], t[3], nxt()
    while t and t[1] == ".":  # db.table
        t = nxt()
        if not t or t[0] == "punct":
            return None
        end, t = t[3], nxt()
    if t and t[1] == "(":  # column list
        depth = 0
        while t:
            depth += {"(": 1, ")": -1}.get(t[1], 0) if t[0] == "punct" else 0
            end = t[3]
            if depth == 0:
                break
            t = nxt()
        t = nxt()
    mid_start = mid_end = t[2] if t else end
    while t:
        if word(t) in ("VALUES", "SELECT", "WITH", "FROM"):
            return None
        if word(t) == "FORMAT":
            fmt = nxt()
            if not fmt or fmt[0] != "word":
                return None
            off = fmt[3]  # data: after blanks up to and including the first newline
            while off < len(buf) and buf[off:off + 1] in b" \t\r\f\v":
                off += 1
            if buf[off:off + 1] == b"\n":
                off += 1
            dec = lambda a, b: s[a:b].encode("latin-1").decode("utf-8")  # noqa: E731
            return dec(start, end), dec(mid_start, mid_end), fmt[1], off
        mid_end, t = t[3], nxt()
    return None


def output_format(sql, default_fmt):
    """The format a query answers in: its own trailing FORMAT clause or the default."""
    m = re.search(r"\bFORMAT\s+([A-Za-z0-9_]+)\s*;?\s*$", sql, re.I)
    return m.group(1) if m else default_fmt


# ---------- engine access ----------

class Engine:
    """The chdb session; every call is made under one lock."""

    def __init__(self, path):
        self.lock = threading.Lock()
        self.session = chdb_session.Session(path)
        self.tmpdir = tempfile.mkdtemp(prefix="chdb_front_")
        # clickhouse-local defaults differ from a server's here; use the server's.
        self._q("SET date_time_input_format = 'basic', implicit_select = 0")
        self.version = self._q("SELECT version()").bytes().decode().strip()
        self.timezone = self._q("SELECT timezone()").bytes().decode().strip()

    def _q(self, sql, fmt="TabSeparated", params=None):
        return self.session.query(sql, fmt, params=params or None)

    def _settings_values(self, names):
        sql = ("SELECT name, value FROM system.settings WHERE name IN (%s)"
               % ", ".join(quote_str(n) for n in names) if names else
               "SELECT name, value FROM system.settings")
        rows = self._q(sql, "JSONCompactEachRow").bytes().decode().splitlines()
        return dict(json.loads(r) for r in rows if r)

    def _restore(self, old, names):
        for name in (n for n in names if n in old):  # names not in system.settings never got set
            try:
                self._q(f"SET {name} = {quote_str(old[name])}")
            except Exception as e:  # noqa: BLE001
                print(f"chdb-front: could not restore setting {name}: {e}", file=sys.stderr)

    def run(self, sql, fmt, database, settings, params, tmp_path=None):
        """Run one statement in `database` with `settings` for it only."""
        with self.lock:
            if self.session is None:
                raise ch_error(1001, "chdb session is closed: the front is shutting down")
            is_set = re.match(r"\s*SET\s", sql, re.I) is not None
            try:
                self._q(f"USE {quote_ident(database)}")
                old = self._settings_values(list(settings)) if settings else {}
                before = self._settings_values([]) if is_set else None
                try:
                    if settings:
                        self._q("SET " + ", ".join(f"{k} = {quote_str(v)}" for k, v in settings.items()))
                    return self._q(sql, fmt, params)
                finally:
                    if is_set:  # a SET without a session lasts for its own request only
                        after = self._settings_values([])
                        self._restore(before, [k for k in after if after[k] != before.get(k)])
                    self._restore(old, list(settings))
            except CHError:
                raise
            except Exception as e:  # noqa: BLE001 - every engine error becomes a CH error
                raise from_engine(e, tmp_path)

    def close(self):
        with self.lock:
            if self.session is not None:
                self.session.close()
                self.session = None


# ---------- HTTP ----------

def mask_secrets(sql):
    return re.sub(r"(?i)(\bBY\s+|\bPASSWORD\s*=?\s*)'[^']*'", r"\1'***'", sql)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "chdb-front"
    engine = None  # set in main()

    def log_message(self, *args):  # _handle() writes the one line per request
        pass

    def do_GET(self):
        self._handle()

    def do_POST(self):
        self._handle()

    def _read_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts = []
            while True:
                line = self.rfile.readline(65537)
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline(65537)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status, body, headers):
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _handle(self):
        t0, status, self.shown = time.monotonic(), 500, ""
        try:
            url = urlsplit(self.path)
            self.shown = url.path
            try:
                body = self._read_body()
            except (ValueError, OSError) as e:  # broken framing: answer, then drop the connection
                self.close_connection = True
                raise ch_error(33, f"Cannot read the request body: {e}")
            if url.path in ("/ping", "/replicas_status") or (
                    url.path == "/" and self.command == "GET" and "query=" not in url.query):
                status = 200
                self._send(200, b"Ok.\n", {"Content-Type": "text/html; charset=UTF-8"})
                return
            if url.path != "/":
                status = 404
                self._send(404, f"There is no handle {url.path}\n\nUse / or /ping for health "
                                "checks.\n".encode(), {"Content-Type": "text/plain; charset=UTF-8"})
                return
            status, body_out, headers = self._query(url, body)
            self._send(status, body_out, headers)
        except Exception as e:  # noqa: BLE001 - every failure is answered as a ClickHouse error
            if isinstance(e, ConnectionError):
                self.close_connection = True
                return
            if not isinstance(e, CHError):
                e = ch_error(1001, f"chdb front internal error: {type(e).__name__}: {e}")
            status = HTTP_STATUS.get(e.code, 500)
            msg = f"Code: {e.code}. DB::Exception: {e.message} (version {self.engine.version} (chdb))\n"
            self._send(status, msg.encode("utf-8", "replace"),
                       {"Content-Type": "text/plain; charset=UTF-8",
                        "X-ClickHouse-Exception-Code": str(e.code),
                        "X-ClickHouse-Server-Display-Name": "chdb-front"})
        finally:
            ms = (time.monotonic() - t0) * 1000
            q = json.dumps(mask_secrets(self.shown)[:200], ensure_ascii=False)
            print(f"{self.command} {q} {status} {ms:.1f}ms", file=sys.stderr, flush=True)

    def _query(self, url, body):
        params = parse_qsl(url.query, keep_blank_values=True)
        p = dict(params)
        hdr = self.headers
        sql_param = p.get("query")
        qparams = {k[6:]: v for k, v in params if k.startswith("param_")}
        ctype = hdr.get("Content-Type", "")
        self.shown = sql_param or "<query in body>"
        body = decode_content(hdr.get("Content-Encoding", ""), body)
        if p.get("decompress") in ("1", "true") and body:
            body = decode_native_frames(body)
        if ctype.lower().startswith("multipart/form-data"):
            fields = parse_multipart(ctype, body)
            body = b""
            sql_param = fields.pop("query", sql_param)
            qparams.update({k[6:]: v for k, v in fields.items() if k.startswith("param_")})
        if sql_param is not None:
            text = sql_param.encode() + (b"\n" + body if body else b"")
        else:
            text = body
        self.shown = text[:400].decode("utf-8", "replace")
        if not text.strip():
            raise ch_error(62, "Empty query")
        settings = {k: v for k, v in params if k not in HTTP_PARAMS and not k.startswith("param_")}
        for k in settings:
            if not IDENT.match(k):
                raise ch_error(115, f"Unknown setting '{k}'")
        if settings.get("readonly", "0") not in ("0", ""):
            raise ch_error(48, "The readonly setting is not supported by the chdb front "
                               "(it could not be reset after the query)")
        settings.pop("readonly", None)
        database = p.get("database") or hdr.get("X-ClickHouse-Database") or "default"
        default_fmt = p.get("default_format") or hdr.get("X-ClickHouse-Format") or "TabSeparated"
        qid = p.get("query_id") or str(uuid.uuid4())
        ins = parse_insert(text)
        tmp_path = None
        try:
            if ins:
                target, middle, fmt_name, off = ins
                self.shown = text[:off].decode("utf-8", "replace").strip()
                fmt = INSERT_FORMATS.get(fmt_name.lower())
                if fmt is None:
                    raise ch_error(48, f"Input format {fmt_name} is not supported by the chdb "
                                       f"front (supported: {', '.join(sorted(set(INSERT_FORMATS.values())))})")
                fd, tmp_path = tempfile.mkstemp(dir=self.engine.tmpdir, suffix=".data")
                with os.fdopen(fd, "wb") as f:
                    f.write(memoryview(text)[off:])
                sql = (f"INSERT INTO {target} FROM INFILE {quote_str(tmp_path)} "
                       f"COMPRESSION 'none' {middle} FORMAT {fmt}")
                out_fmt = default_fmt
            else:
                try:
                    sql = text.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise ch_error(62, f"Query is not valid UTF-8: {e}")
                out_fmt = output_format(sql, default_fmt)
                if out_fmt.lower() in NOT_CH_FORMATS:
                    raise ch_error(73, f"Unknown output format {out_fmt}")
            res = self.engine.run(sql, default_fmt, database, settings, qparams, tmp_path)
        finally:
            if tmp_path:
                os.unlink(tmp_path)
        data = res.bytes()
        summary = {"read_rows": res.rows_read(), "read_bytes": res.bytes_read(),
                   "written_rows": res.rows_written(), "written_bytes": res.bytes_written(),
                   "elapsed_ns": int(res.elapsed() * 1e9)}
        summary = json.dumps({k: str(v) for k, v in summary.items()}, separators=(",", ":"))
        headers = {"Content-Type": content_type(out_fmt), "X-ClickHouse-Format": out_fmt,
                   "X-ClickHouse-Query-Id": qid, "X-ClickHouse-Timezone": self.engine.timezone,
                   "X-ClickHouse-Server-Display-Name": "chdb-front",
                   "X-ClickHouse-Summary": summary}
        if p.get("send_progress_in_http_headers") in ("1", "true"):
            headers["X-ClickHouse-Progress"] = summary
        if p.get("compress") in ("1", "true"):
            data = encode_native_frames(data)
        elif p.get("enable_http_compression", "1") in ("1", "true") and data:
            accept = hdr.get("Accept-Encoding", "").lower()
            for name, encoder in RESPONSE_ENCODERS:
                if name in accept:
                    data = encoder(data)
                    headers["Content-Encoding"] = name
                    break
        return 200, data, headers


def content_type(fmt):
    low = fmt.lower()
    for prefix, ctype in CONTENT_TYPES:
        if low.startswith(prefix):
            return ctype
    return "application/octet-stream"


def parse_multipart(ctype, body):
    m = re.search(r'boundary="?([^";]+)"?', ctype)
    if not m:
        raise ch_error(36, "multipart/form-data without a boundary")
    fields = {}
    for part in body.split(b"--" + m.group(1).encode())[1:]:
        if part.startswith(b"--"):
            break
        head, _, value = part.partition(b"\r\n\r\n")
        name = re.search(rb'name="([^"]*)"', head)
        if name:
            fields[name.group(1).decode()] = value[:-2].decode("utf-8") if value.endswith(
                b"\r\n") else value.decode("utf-8")
    return fields


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8123)
    ap.add_argument("--path", required=True, help="chdb session data directory")
    args = ap.parse_args()
    os.makedirs(args.path, exist_ok=True)
    engine = Engine(args.path)
    Handler.engine = engine
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    print(f"READY {server.server_address[1]}", flush=True)
    stop.wait()
    server.shutdown()
    server.server_close()
    engine.close()
    try:
        os.rmdir(engine.tmpdir)
    except OSError:
        pass
    print("chdb-front: stopped", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
