#!/usr/bin/env python3
"""Reads orderflow's golden vectors (schemas/vectors/*.bin) with fastavro, independently of the
Rust code: strips the Avro single-object header, checks its CRC-64-AVRO fingerprint against the
.avsc files (computed both by fastavro and by the spec's algorithm below), decodes the datum
with schemaless_reader and compares it with the expected JSON (*.json). Exits non-zero on any
mismatch.

Usage: check_vectors.py [SCHEMAS_DIR]   (default: schemas/ next to this repository's tests/)
"""
import io
import json
import sys
import uuid
from datetime import datetime, timezone
from pathlib import Path

import fastavro
from fastavro.schema import fingerprint, parse_schema, to_parsing_canonical_form

EMPTY = 0xC15D213AA4D7A795


def _table():
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (EMPTY & -(fp & 1))
        table.append(fp)
    return table


TABLE = _table()


def crc64_avro(data: bytes) -> int:
    fp = EMPTY
    for b in data:
        fp = (fp >> 8) ^ TABLE[(fp ^ b) & 0xFF]
    return fp


def normalize(value):
    """fastavro's logical-type objects → the JSON shape of orderflow's events."""
    if isinstance(value, dict):
        return {k: normalize(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [normalize(v) for v in value]
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).isoformat()
    return value


def normalize_expected(value):
    if isinstance(value, dict):
        return {k: normalize_expected(v) for k, v in value.items()}
    if isinstance(value, list):
        return [normalize_expected(v) for v in value]
    if isinstance(value, str) and value.endswith("Z") and "T" in value:
        try:
            return datetime.fromisoformat(value).astimezone(timezone.utc).isoformat()
        except ValueError:
            return value
    return value


def main() -> int:
    schemas_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[2] / "schemas"
    schemas = {}
    for path in sorted(schemas_dir.glob("*.avsc")):
        parsed = parse_schema(json.loads(path.read_text()))
        canonical = to_parsing_canonical_form(parsed)
        fp_ours = crc64_avro(canonical.encode())
        # fastavro gives the fingerprint's 8 bytes in header order (little-endian) as hex.
        fp_fastavro = int.from_bytes(bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO")), "little")
        if fp_ours != fp_fastavro:
            print(f"FAIL {path.name}: our CRC-64-AVRO {fp_ours:016x} != fastavro's {fp_fastavro:016x}")
            return 1
        schemas[fp_ours] = (path.name, parsed)

    failures = 0
    vectors = sorted((schemas_dir / "vectors").glob("*.bin"))
    for bin_path in vectors:
        name = bin_path.stem
        data = bin_path.read_bytes()
        expected = json.loads(bin_path.with_suffix(".json").read_text())
        expected.pop("type", None)  # the CloudEvents type tag of the JSON shape, not a field
        if data[:2] != b"\xc3\x01" or len(data) < 10:
            print(f"FAIL {name}: not an Avro single-object encoding (starts {data[:2].hex()})")
            failures += 1
            continue
        fp = int.from_bytes(data[2:10], "little")
        if fp not in schemas:
            print(f"FAIL {name}: fingerprint {data[2:10].hex()} matches no .avsc in {schemas_dir}")
            failures += 1
            continue
        schema_file, schema = schemas[fp]
        buf = io.BytesIO(data[10:])
        record = fastavro.schemaless_reader(buf, schema)
        if buf.read():
            print(f"FAIL {name}: trailing bytes after the record")
            failures += 1
            continue
        got, want = normalize(record), normalize_expected(expected)
        if got != want:
            print(f"FAIL {name} ({schema_file}):\n  fastavro: {json.dumps(got, sort_keys=True)}\n  expected: {json.dumps(want, sort_keys=True)}")
            failures += 1
        else:
            print(f"ok   {name} ({schema_file}, fingerprint {fp:016x})")
    if not vectors:
        print(f"FAIL no vectors under {schemas_dir / 'vectors'}")
        return 1
    if failures:
        print(f"{failures} of {len(vectors)} vectors failed")
        return 1
    print(f"{len(vectors)} vectors ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
