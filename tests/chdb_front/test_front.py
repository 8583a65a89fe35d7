#!/usr/bin/env python3
"""Self-test of tests/chdb_front/front.py: starts the front on a free port over a temp dir and
drives it over real HTTP. Run: python3 tests/chdb_front/test_front.py (exit status 0 = pass)."""
import concurrent.futures
import http.client
import json
import os
import signal
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from decimal import Decimal
from urllib.parse import urlencode

import lz4.block
import lz4.frame
import zstandard
from clickhouse_cityhash.cityhash import CityHash128

FRONT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "front.py")
DB = "test db"
TABLE = 'we"ird; t`able name'
QT = "`" + TABLE.replace("`", "\\`") + "`"  # quoted table name
FAILURES = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        FAILURES.append(what)


class Front:
    def __init__(self, port):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.port = port

    def req(self, sql=None, body=b"", method="POST", headers=None, chunked=False, **params):
        if sql is not None:
            params["query"] = sql
        url = "/?" + urlencode(params) if params else "/"
        hdrs = dict(headers or {})
        if chunked:
            self.conn.request(method, url, body=iter([body[:7], body[7:]]), headers=hdrs,
                              encode_chunked=True)
        else:
            self.conn.request(method, url, body=body, headers=hdrs)
        resp = self.conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()

    def ok(self, sql=None, body=b"", **kw):
        status, headers, data = self.req(sql, body, **kw)
        if status != 200:
            raise AssertionError(f"{sql!r}: HTTP {status}: {data[:500]!r}")
        return data


def frame(raw, method=0x82, corrupt=False):
    """One block of ClickHouse's compressed framing, as the Rust crate writes it."""
    if method == 0x82:
        payload = lz4.block.compress(raw, store_size=False)
    elif method == 0x90:
        payload = zstandard.ZstdCompressor().compress(raw)
    else:
        payload = raw
    block = struct.pack("<BII", method, 9 + len(payload), len(raw)) + payload
    h = CityHash128(block)
    checksum = struct.pack("<QQ", h >> 64, h & 0xFFFFFFFFFFFFFFFF)
    if corrupt:
        checksum = bytes([checksum[0] ^ 0xFF]) + checksum[1:]
    return checksum + block


def unframe(data):
    out, pos = [], 0
    while pos < len(data):
        method, csize, usize = struct.unpack_from("<BII", data, pos + 16)
        block = data[pos + 16:pos + 16 + csize]
        h = CityHash128(block)
        assert data[pos:pos + 16] == struct.pack("<QQ", h >> 64, h & 0xFFFFFFFFFFFFFFFF)
        assert method == 0x82
        out.append(lz4.block.decompress(block[9:], uncompressed_size=usize))
        pos += 16 + csize
    return b"".join(out)


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def rb_string(s):
    b = s.encode()
    return varint(len(b)) + b


def rowbinary_row(id_, ts_us, amount, uid, tags, note, version, deleted):
    out = struct.pack("<Q", id_) + struct.pack("<q", ts_us)
    out += (int(Decimal(amount) * 10 ** 20)).to_bytes(32, "little", signed=True)
    u = uuid.UUID(uid).bytes
    out += u[:8][::-1] + u[8:][::-1]
    out += varint(len(tags))
    for t in tags:
        out += b"\x01" if t is None else b"\x00" + rb_string(t)
    out += b"\x01" if note is None else b"\x00" + rb_string(note)
    return out + struct.pack("<QB", version, deleted)


def rows(front, where="1"):
    data = front.ok(f"SELECT id, toString(ts) AS ts, toString(amount) AS amount, uid, tags, note, "
                    f"toString(doc) AS doc FROM {QT} FINAL WHERE {where} ORDER BY id",
                    default_format="JSONEachRow", database=DB)
    return {r["id"]: r for r in map(json.loads, data.decode().splitlines())}


def run_tests(f):
    f.conn.request("GET", "/ping")
    r = f.conn.getresponse()
    check(r.status == 200 and r.read() == b"Ok.\n", "GET /ping -> Ok.")
    f.conn.request("GET", "/")
    r = f.conn.getresponse()
    check(r.status == 200 and r.read() == b"Ok.\n", "GET / -> Ok.")
    version = f.ok("SELECT version()", method="GET").decode().strip()
    check(version.startswith("26.9."), f"SELECT version() is the engine's: {version}")

    f.ok(f"CREATE DATABASE IF NOT EXISTS `{DB}`")
    f.ok(f"""CREATE TABLE {QT} (
        id UInt64, ts DateTime64(6, 'UTC'), amount Decimal(76, 20), uid UUID,
        tags Array(Nullable(String)), note Nullable(String), doc JSON,
        _version UInt64, _is_deleted UInt8)
        ENGINE = ReplacingMergeTree(_version, _is_deleted) ORDER BY id""", database=DB)

    # TSV with escapes, keep-alive and a chunked body
    sock = f.conn.sock
    tsv = ("1\t2026-11-25 10:00:00.123456\t12345678901234567890.12345678901234567890\t"
           "61f0c404-5cb3-11e7-907b-a6006ad3dba0\t['a\\tb',NULL,'ü']\ttab\\there\\nnl\\\\bs é"
           "\t{\"k\":1}\t1\t0\n"
           "2\t2026-11-25 10:00:01\t-1.5\t00000000-0000-0000-0000-000000000002\t[]\t\\N\t{}\t1\t0\n")
    f.ok(f"INSERT INTO {QT} FORMAT TabSeparated", tsv.encode(), database=DB, chunked=True)
    got = rows(f)
    check(got.get(1, {}).get("note") == "tab\there\nnl\\bs é", "TSV escapes \\t \\n \\\\ é")
    check(got.get(1, {}).get("tags") == ["a\tb", None, "ü"], "TSV Array(Nullable(String))")
    check(got.get(2, {}).get("note") is None, "TSV \\N -> NULL")
    check(got.get(1, {}).get("amount") == "12345678901234567890.1234567890123456789",
          "Decimal(76,20) exact")
    check(got.get(1, {}).get("ts") == "2026-11-25 10:00:00.123456", "DateTime64(6,'UTC')")
    check(f.conn.sock is sock, "keep-alive: one connection for all requests")

    # RowBinary (query in the URL, data in the body)
    rb = rowbinary_row(3, 1_764_064_800_000_001, "0.00000000000000000001",
                       "61f0c404-5cb3-11e7-907b-a6006ad3dba0", ["x", None], None, 1, 0)
    f.ok(f"INSERT INTO {QT} (id, ts, amount, uid, tags, note, _version, _is_deleted) "
         f"FORMAT RowBinary", rb, database=DB)
    r3 = rows(f, "id = 3").get(3, {})
    check(r3.get("amount") == "0.00000000000000000001" and r3.get("tags") == ["x", None]
          and r3.get("uid") == "61f0c404-5cb3-11e7-907b-a6006ad3dba0"
          and r3.get("ts") == "2025-11-25 10:00:00.000001", f"RowBinary insert {r3}")

    # JSONEachRow, the query in the body before the data, db-qualified name
    js = json.dumps({"id": 4, "ts": "2026-01-02 03:04:05.000006", "amount": "7.25",
                     "uid": "11111111-2222-3333-4444-555555555555", "tags": [None, "q'uote"],
                     "note": "n\"q", "doc": {"a": {"b": [1, 2]}}, "_version": 1, "_is_deleted": 0})
    f.ok(body=f"INSERT INTO `{DB}`.{QT} FORMAT JSONEachRow\n{js}\n".encode())
    r4 = rows(f, "id = 4").get(4, {})
    check(r4.get("note") == 'n"q' and json.loads(r4.get("doc", "{}")) == {"a": {"b": [1, 2]}},
          f"JSONEachRow insert with JSON column {r4}")

    # decompress=1: LZ4 and ZSTD framing, checksum verified; a corrupted checksum is refused
    data = b"".join(f"{i}\t2026-01-01 00:00:00\t{i}.5\t{uuid.UUID(int=i)}\t['v{i}']\tlz4 {i}"
                    f"\t{{}}\t1\t0\n".encode() for i in range(100, 2100))
    half = data.index(b"\n1100\t") + 1
    f.ok(f"INSERT INTO {QT} FORMAT TSV", frame(data[:half]) + frame(data[half:], 0x90),
         database=DB, decompress=1)
    n = f.ok(f"SELECT count() FROM {QT} WHERE id >= 100", database=DB).strip()
    check(n == b"2000", f"decompress=1 LZ4+ZSTD framed insert: {n}")
    status, headers, body = f.req(f"INSERT INTO {QT} FORMAT TSV",
                                  frame(b"5000\t2026-01-01\t1\t" + str(uuid.UUID(int=1)).encode()
                                        + b"\t[]\tbad\t{}\t1\t0\n", corrupt=True),
                                  database=DB, decompress=1)
    check(status >= 400 and headers.get("X-ClickHouse-Exception-Code") == "40"
          and body.startswith(b"Code: 40. DB::Exception: Checksum doesn't match"),
          f"corrupted checksum refused: {status} {body[:90]!r}")
    check(rows(f, "id = 5000") == {}, "nothing inserted from the corrupted block")
    status, headers, body = f.req(f"INSERT INTO {QT} FORMAT TSV", frame(b"x", 0x07),
                                  database=DB, decompress=1)
    check(status >= 400 and b"DB::Exception" in body, f"unknown method byte refused: {body[:80]!r}")

    # ReplacingMergeTree(_version, _is_deleted) with FINAL, default_format=JSONEachRow
    upd = [{"id": 1, "ts": "2026-11-25 11:00:00", "amount": "1", "uid": str(uuid.UUID(int=1)),
            "tags": [], "note": "v2", "doc": {}, "_version": 2, "_is_deleted": 0},
           {"id": 2, "ts": "2026-11-25 11:00:00", "amount": "1", "uid": str(uuid.UUID(int=2)),
            "tags": [], "note": None, "doc": {}, "_version": 2, "_is_deleted": 1}]
    f.ok(f"INSERT INTO {QT} FORMAT JSONEachRow",
         "\n".join(map(json.dumps, upd)).encode(), database=DB)
    final = f.ok(f"SELECT id, note FROM {QT} FINAL WHERE id < 3 ORDER BY id", database=DB,
                 default_format="JSONEachRow")
    check(final == b'{"id":1,"note":"v2"}\n', f"SELECT ... FINAL JSONEachRow: {final!r}")

    # credentials are accepted (and ignored), never logged
    got = f.ok("SELECT 1", user="default", password="s3cret-pw",
               headers={"X-ClickHouse-User": "default", "X-ClickHouse-Key": "s3cret-pw",
                        "Authorization": "Basic ZGVmYXVsdDpzM2NyZXQtcHc="})
    check(got == b"1\n", "user/password params and headers accepted")

    # errors
    status, headers, body = f.req("SELECT * FROM no_such_table")
    check(status == 404 and headers.get("X-ClickHouse-Exception-Code") == "60"
          and body.startswith(b"Code: 60. DB::Exception: ") and b"(UNKNOWN_TABLE)" in body,
          f"unknown table error: {status} {body[:100]!r}")
    status, headers, body = f.req(f"INSERT INTO {QT} FORMAT Parquet", b"PAR1", database=DB)
    check(status == 501 and headers.get("X-ClickHouse-Exception-Code") == "48",
          f"unsupported input format refused: {status} {body[:90]!r}")
    status, headers, body = f.req("SELECT 1", max_blok_size="1")
    check(headers.get("X-ClickHouse-Exception-Code") == "115", "unknown setting refused")

    # settings as URL params, for that query only; query parameters
    got = f.ok("SELECT getSetting('max_block_size')", max_block_size="1234").strip()
    after = f.ok("SELECT getSetting('max_block_size')").strip()
    check(got == b"1234" and after != b"1234", f"setting per query: {got} then {after}")
    got = f.ok("SELECT {p:String}, {n:UInt8} + 1", param_p="a\\tb", param_n="41")
    check(got == b"a\\tb\t42\n", f"param_ substitution: {got!r}")
    boundary = "clickhouse-rs-boundary-test"
    form = "".join(f"--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n"
                   for k, v in (("query", "SELECT {p:String} AS p"), ("param_p", "it's")))
    got = f.ok(body=(form + f"--{boundary}--\r\n").encode(),
               headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    check(got == b"it\\'s\n", f"multipart query + param_ (as the crate sends .param()): {got!r}")
    got = f.ok("SELECT 40 +", b"2")
    check(got == b"42\n", "query param + body appended after a newline")
    f.ok(f"INSERT INTO {QT} (id, ts, amount, uid) FORMAT RowBinary", b"", database=DB)
    f.ok(f"INSERT INTO {QT} (id, ts, amount, uid, note) VALUES", b"(7, 0, 1, generateUUIDv4(), 'v')",
         database=DB)
    check(rows(f, "id = 7").get(7, {}).get("note") == "v", "empty-body insert ok; VALUES body")
    got = f.ok("SELECT currentDatabase()", database=DB).strip()
    check(got == DB.encode() and f.ok("SELECT currentDatabase()").strip() == b"default",
          "database param does not leak")

    # response compression
    status, headers, body = f.req("SELECT number FROM numbers(100000)",
                                  headers={"Accept-Encoding": "lz4"})
    check(headers.get("Content-Encoding") == "lz4"
          and lz4.frame.decompress(body).count(b"\n") == 100000, "Accept-Encoding: lz4 response")
    body = f.ok("SELECT number FROM numbers(300000)", compress=1)
    check(unframe(body).count(b"\n") == 300000, "compress=1 framed response")

    # concurrency: one lock around the session
    def worker(i):
        c = Front(f.port)
        return c.ok(f"SELECT sum(number) FROM numbers({i * 1000})").strip()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(worker, range(40)))
    check(results == [str(sum(range(i * 1000))).encode() for i in range(40)],
          "40 concurrent queries on 8 connections")


def main():
    tmp = tempfile.mkdtemp(prefix="chdb_front_test_")
    proc = subprocess.Popen([sys.executable, FRONT, "--host", "127.0.0.1", "--port", "0",
                             "--path", os.path.join(tmp, "data")],
                            stdout=subprocess.PIPE, stderr=open(os.path.join(tmp, "front.log"), "w"))
    try:
        line = proc.stdout.readline().decode()
        if not line.startswith("READY "):
            print(f"front did not start: {line!r}")
            return 1
        run_tests(Front(int(line.split()[1])))
    except Exception as e:  # noqa: BLE001
        FAILURES.append(f"exception: {type(e).__name__}: {e}")
        print(f"FAIL exception: {e!r}")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = None
        check(code == 0, f"SIGTERM: clean exit (status {code})")
        log = open(os.path.join(tmp, "front.log")).read()
        check("s3cret-pw" not in log and len(log.splitlines()) > 20, "request log without passwords")
    print(f"front log: {os.path.join(tmp, 'front.log')}")
    print("PASS" if not FAILURES else f"{len(FAILURES)} FAILED: {FAILURES}")
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
