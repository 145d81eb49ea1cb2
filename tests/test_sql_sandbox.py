"""Hostile SQL against a writable COPY of a Spider database: every attempt is refused or stopped
within its limit, and the file's bytes (and its folder) are unchanged afterwards."""
from __future__ import annotations

import hashlib
import shutil
import time

import pytest

from deepretrieval.sqlexec.pool import SqlItem, SqlPool
from deepretrieval.sqlexec.sandbox import (Limits, SqlError, SqlLimitExceeded, SqlRefused, SqlTimeout, SandboxConnection,
                             connection_for, execute)

SHORT = Limits(timeout_s=1.0)
SLACK_S = 1.5  # scheduling slack on a shared 2-core machine


@pytest.fixture
def world_copy(spider_dir, tmp_path):
    """A writable copy of world_1 (city has 4,079 rows) in its own folder; yields its path and
    asserts afterwards that neither the file nor the folder changed."""
    folder = tmp_path / "db"
    folder.mkdir()
    path = folder / "world_1.sqlite"
    shutil.copyfile(spider_dir / "database" / "world_1" / "world_1.sqlite", path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    yield path
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest, "the database file was modified"
    assert sorted(p.name for p in folder.iterdir()) == ["world_1.sqlite"], "files appeared beside the db"


REFUSED = [
    "DROP TABLE city",
    "DELETE FROM city",
    "INSERT INTO city (Name) VALUES ('Atlantis')",
    "UPDATE city SET Population = 0",
    "CREATE TABLE evil (x)",
    "CREATE TEMP TABLE evil (x)",
    "CREATE TEMP VIEW v AS SELECT 1",
    "CREATE INDEX evil ON city (Name)",
    "ALTER TABLE city RENAME TO town",
    "WITH x AS (SELECT 1) DELETE FROM city",
    "REPLACE INTO city (ID, Name) VALUES (1, 'x')",
    "PRAGMA writable_schema = ON",
    "PRAGMA journal_mode = WAL",
    "PRAGMA table_info(city)",
    "SELECT * FROM pragma_table_info('city')",
    "SELECT load_extension('/usr/lib/x86_64-linux-gnu/libsqlite3.so.0')",
    "SELECT load_extension('mod_spatialite')",
    "BEGIN IMMEDIATE",
    "ANALYZE",
    "REINDEX",
    "SELECT 1; DROP TABLE city",
    "DROP TABLE city; SELECT 1",
    "SELECT count(*) FROM city; SELECT 1",
    "",
    "   \n ",
]


@pytest.mark.parametrize("sql", REFUSED)
def test_writes_pragmas_extensions_and_multi_statements_are_refused(world_copy, sql):
    with pytest.raises(SqlRefused) as exc:
        execute(world_copy, sql, SHORT, immutable=False)
    assert "refused" in str(exc.value) or "empty" in str(exc.value)
    assert execute(world_copy, "SELECT count(*) FROM city", SHORT) == [(4079,)]


def test_refusal_names_what_was_refused(world_copy):
    with pytest.raises(SqlRefused, match="PRAGMA writable_schema"):
        execute(world_copy, "PRAGMA writable_schema = ON")
    with pytest.raises(SqlRefused, match="FUNCTION load_extension"):
        execute(world_copy, "SELECT load_extension('x')")
    with pytest.raises(SqlRefused, match="one statement"):
        execute(world_copy, "SELECT 1; SELECT 2")


@pytest.mark.parametrize("sql", ["ATTACH DATABASE '{other}' AS other", "VACUUM INTO '{other}'"])
def test_attach_and_vacuum_into_create_no_file(world_copy, spider_dir, sql):
    other = world_copy.parent / "other.sqlite"  # the fixture asserts nothing appears there
    with pytest.raises(SqlRefused, match="ATTACH"):
        execute(world_copy, sql.format(other=other))
    existing = spider_dir / "database" / "pets_1" / "pets_1.sqlite"
    with pytest.raises(SqlRefused, match="ATTACH"):
        execute(world_copy, f"ATTACH DATABASE '{existing}' AS pets")


@pytest.mark.parametrize("sql", [
    # never-ending recursive CTE
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c",
    # huge cross join: 4,079^3 = 6.8e10 rows to count
    "SELECT count(*) FROM city a, city b, city c",
    # a full sort of 16.6 M rows (about 3 s on a 2-core Zen 4) before the first row comes out;
    # with LIMIT 1 sqlite keeps a one-row heap instead and finishes in 0.7 s, inside the limit
    "SELECT a.Name FROM city a, city b ORDER BY a.Population * b.Population DESC, a.Name, b.Name",
])
def test_runaway_queries_stop_within_the_time_limit(world_copy, sql):
    start = time.monotonic()
    with pytest.raises(SqlTimeout, match="1 s time limit"):
        execute(world_copy, sql, SHORT)
    assert time.monotonic() - start < SHORT.timeout_s + SLACK_S
    # the interrupted connection is still good
    assert execute(world_copy, "SELECT Name FROM city WHERE ID = 1", SHORT) == [("Kabul",)]


def test_millions_of_rows_stop_at_the_row_cap(world_copy):
    limits = Limits(timeout_s=20.0)  # default caps: 1,000,000 rows
    start = time.monotonic()
    with pytest.raises(SqlLimitExceeded, match="more than 1000000 rows"):
        execute(world_copy, "SELECT a.ID, b.ID FROM city a, city b", limits)  # 16.6 M rows
    assert time.monotonic() - start < 10


def test_byte_cap_and_value_length_cap(world_copy):
    with pytest.raises(SqlLimitExceeded, match="byte cap"):
        execute(world_copy, "SELECT a.Name, b.Name FROM city a, city b LIMIT 200000", Limits(max_bytes=2**20))
    with pytest.raises(SqlLimitExceeded, match="longer than"):
        execute(world_copy, "SELECT zeroblob(1000000000)")
    with pytest.raises(SqlLimitExceeded, match="longer than"):
        execute(world_copy, "SELECT replace(hex(zeroblob(400000)), '0', '00')", Limits(max_value_bytes=10**6))


def test_heap_cap_in_a_worker_process(world_copy):
    # sqlite's heap limit is per process, so this runs in a pool worker, never in pytest itself.
    gold = "SELECT count(*) FROM city"
    hog = "SELECT a.Name || b.Name AS n FROM city a, city b ORDER BY n"  # a 16.6 M-row sort
    with SqlPool(workers=2, limits=Limits(timeout_s=20.0, heap_bytes=32 * 2**20)) as pool:
        outcome, ok = pool.evaluate([SqlItem(str(world_copy), hog, gold), SqlItem(str(world_copy), gold, gold)])
    assert outcome.status.value == "pred_error" and "heap limit of 33554432" in outcome.message
    assert ok.correct


def test_ordinary_queries_run(world_copy):
    rows = execute(world_copy, """
        WITH big AS (SELECT CountryCode, max(Population) AS p FROM city GROUP BY CountryCode)
        SELECT c.Name, lower(c.Continent), b.p, rank() OVER (ORDER BY b.p DESC)
        FROM country c JOIN big b ON b.CountryCode = c.Code ORDER BY b.p DESC LIMIT 2;""")
    assert rows == [("India", "asia", 10500000, 1), ("South Korea", "asia", 9981619, 2)]
    assert execute(world_copy, "SELECT count(*) FROM sqlite_master WHERE type = 'table'") == [(4,)]
    assert execute(world_copy, "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 5) "
                               "SELECT sum(x) FROM c") == [(15,)]


def test_errors_carry_sqlites_message(world_copy, tmp_path):
    with pytest.raises(SqlError, match="no such column: Nmae"):
        execute(world_copy, "SELECT Nmae FROM city")
    with pytest.raises(SqlError, match="syntax error"):
        execute(world_copy, "SELEC Name FROM city")
    with pytest.raises(SqlError, match="does not exist"):
        execute(tmp_path / "nope.sqlite", "SELECT 1")
    assert not (tmp_path / "nope.sqlite").exists()


def test_connections_are_reused_and_limits_are_configurable(world_copy):
    assert Limits().timeout_s == 30.0
    conn = connection_for(world_copy)
    assert connection_for(world_copy) is conn and isinstance(conn, SandboxConnection)
    assert connection_for(world_copy, immutable=False) is not conn
    with pytest.raises(SqlTimeout, match="0.3 s"):
        execute(world_copy, "SELECT count(*) FROM city a, city b, city c", Limits(timeout_s=0.3))
