"""The blind A/B vote store: an embedded SQLite database of the pairs served and the votes cast
(the app's A/B tab writes it; eval/votes.py ranks what it holds).

    store = VoteStore("reports/votes.sqlite")         # created on first use
    pair = store.serve("ckpts/run1", "ckpts/run2", prompt="hello.wav")   # order randomised
    pair.id, pair.a, pair.b                            # a / b: which checkpoint plays as A / B
    store.vote(pair.id, "A")                           # "A", "B" or "tie"; once per pair
    read_votes("reports/votes.sqlite")                 # every vote, for the analysis

Safety: WAL journal (readers never block the writer; a writer killed mid-vote leaves every
committed vote), one short BEGIN IMMEDIATE transaction per served pair and per vote, a busy
timeout so several people (processes or threads) voting at once queue instead of failing. The
schema version is PRAGMA user_version plus a meta row naming the file's purpose: a file that is
not a SQLite database, a database of something else or of another schema version is refused
with a VotesError naming the path, and nothing is written to it (the check runs before WAL is
switched on or anything is created). A vote needs the id of a pair this database served, and a
pair takes one vote: a vote for a pair never served, or a second vote, is refused (VoteError).
"""

from __future__ import annotations

import secrets
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

SCHEMA_VERSION = 1
APP_ID = "s2s-workbench votes"
CHOICES = ("A", "B", "tie")
BUSY_TIMEOUT_S = 30.0
SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE pairs (
    id TEXT PRIMARY KEY,            -- random, handed to the listener's session instead of names
    a TEXT NOT NULL,                -- the checkpoint played as A
    b TEXT NOT NULL,                -- the checkpoint played as B
    prompt TEXT NOT NULL DEFAULT '',
    served_at REAL NOT NULL
);
CREATE TABLE votes (
    pair_id TEXT PRIMARY KEY REFERENCES pairs(id),   -- one vote per served pair
    choice TEXT NOT NULL CHECK (choice IN ('A', 'B', 'tie')),
    voted_at REAL NOT NULL
);
"""
SQLITE_MAGIC = b"SQLite format 3\x00"


@contextmanager
def immediate(con: sqlite3.Connection):
    """One write transaction: BEGIN IMMEDIATE takes the write lock at once (waiting out other
    writers up to the busy timeout); COMMIT at the end, ROLLBACK on any error."""
    con.execute("BEGIN IMMEDIATE")
    try:
        yield con
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


class VotesError(ValueError):
    """The votes database cannot be used (corrupt, another program's, another version)."""


class VoteError(ValueError):
    """A vote that is refused: an unknown pair, a second vote, a choice that is not A/B/tie."""


@dataclass(frozen=True)
class Pair:
    id: str
    a: str
    b: str
    prompt: str = ""


class VoteStore:
    """One votes database; every method opens its own short connection, so a store can be
    shared by threads and several processes may hold stores of one file."""

    def __init__(self, path: str | Path, *, create: bool = True, busy_timeout: float = BUSY_TIMEOUT_S):
        self.path = Path(path)
        self.busy_timeout = busy_timeout
        if not self.path.exists() and not create:
            raise VotesError(f"no votes database at {str(self.path)!r} (the app's A/B tab creates it)")
        self._check_file()
        with self._db_errors():
            con = self._connect()
            try:
                self._check_or_create(con)
                # only now, with the file known to be ours: WAL persists in the file's header
                if con.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                    con.execute("PRAGMA journal_mode=WAL")
            finally:
                con.close()

    # -- opening

    def _check_file(self) -> None:
        if self.path.is_dir():
            raise VotesError(f"votes database {str(self.path)!r} is a directory")
        if self.path.exists() and self.path.stat().st_size > 0:
            with open(self.path, "rb") as f:
                head = f.read(len(SQLITE_MAGIC))
            if head != SQLITE_MAGIC:
                raise VotesError(f"{str(self.path)!r} is not a SQLite database (corrupt, or another kind "
                                 "of file); it was left as it is: move it away to start a new votes database")

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE ... COMMIT)
        con = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None)
        con.execute(f"PRAGMA busy_timeout={int(self.busy_timeout * 1000)}")
        return con

    def _check_or_create(self, con: sqlite3.Connection) -> None:
        try:
            version = con.execute("PRAGMA user_version").fetchone()[0]
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        except sqlite3.DatabaseError as e:
            raise VotesError(f"{str(self.path)!r} cannot be read as a SQLite database ({e}); it was left "
                             "as it is: move it away to start a new votes database") from None
        if version == 0 and not tables:  # a new, empty database: create the schema, once
            with immediate(con):
                if con.execute("PRAGMA user_version").fetchone()[0] == 0:  # not made meanwhile
                    # statement by statement: executescript() would COMMIT first
                    for statement in SCHEMA.split(";"):
                        if statement.strip():
                            con.execute(statement)
                    con.execute("INSERT INTO meta VALUES ('app', ?), ('created_at', ?)", (APP_ID, str(time.time())))
                    con.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            version = SCHEMA_VERSION
            tables = {"meta", "pairs", "votes"}
        app = None
        if "meta" in tables:
            row = con.execute("SELECT value FROM meta WHERE key='app'").fetchone()
            app = row[0] if row else None
        if app != APP_ID:
            raise VotesError(f"{str(self.path)!r} is a SQLite database but not a votes database of this "
                             f"workbench (tables: {sorted(tables)}); it was left as it is")
        if version != SCHEMA_VERSION:
            raise VotesError(f"votes database {str(self.path)!r} has schema version {version}; this workbench "
                             f"reads version {SCHEMA_VERSION} only; it was left as it is (use the workbench "
                             "version that wrote it, or a new file)")

    @contextmanager
    def _db_errors(self):
        """sqlite's own errors (a file damaged since it was opened, a lock held past the busy
        timeout) -> VotesError naming the file."""
        try:
            yield
        except sqlite3.DatabaseError as e:
            raise VotesError(f"votes database {str(self.path)!r}: {e}") from None

    # -- writing

    @contextmanager
    def _transaction(self):
        """A connection inside one write transaction (closed after it), sqlite errors as VotesError."""
        with self._db_errors():
            con = self._connect()
            try:
                with immediate(con):
                    yield con
            finally:
                con.close()

    def serve(self, first: str, second: str, prompt: str = "", *, swap: bool | None = None) -> Pair:
        """Record that `first` and `second` answer one prompt; which plays as A is a coin flip
        (swap: force it, for tests). Returns the pair with its random id."""
        if not first or not second or first == second:
            raise VoteError(f"an A/B pair needs two different checkpoints, got {first!r} and {second!r}")
        if swap is None:
            swap = secrets.randbelow(2) == 1
        a, b = (second, first) if swap else (first, second)
        pair = Pair(secrets.token_urlsafe(12), a, b, str(prompt))
        with self._transaction() as con:
            con.execute("INSERT INTO pairs (id, a, b, prompt, served_at) VALUES (?, ?, ?, ?, ?)",
                        (pair.id, pair.a, pair.b, pair.prompt, time.time()))
        return pair

    def vote(self, pair_id: str, choice: str) -> Pair:
        """Store the vote for a served pair; returns the pair (now its names may be shown)."""
        if choice not in CHOICES:
            raise VoteError(f"vote {choice!r} is not one of {list(CHOICES)}")
        pair_id = str(pair_id)
        with self._transaction() as con:
            row = con.execute("SELECT id, a, b, prompt FROM pairs WHERE id=?", (pair_id,)).fetchone()
            if row is None:
                raise VoteError(f"no pair {pair_id!r} was served by {str(self.path)!r}: a vote must name "
                                "a pair the A/B tab played; refused")
            if con.execute("SELECT 1 FROM votes WHERE pair_id=?", (row[0],)).fetchone():
                raise VoteError(f"pair {pair_id!r} already has a vote; one vote per pair, refused")
            con.execute("INSERT INTO votes (pair_id, choice, voted_at) VALUES (?, ?, ?)",
                        (row[0], choice, time.time()))
        return Pair(*row)

    # -- reading

    def _read(self, sql: str) -> list[tuple]:
        with self._db_errors():
            con = self._connect()
            try:
                return con.execute(sql).fetchall()
            finally:
                con.close()

    def votes(self) -> list[dict]:
        """Every vote: {pair_id, a, b, choice, prompt, voted_at}, oldest first."""
        rows = self._read("SELECT v.pair_id, p.a, p.b, v.choice, p.prompt, v.voted_at FROM votes v "
                          "JOIN pairs p ON p.id = v.pair_id ORDER BY v.voted_at, v.rowid")
        keys = ("pair_id", "a", "b", "choice", "prompt", "voted_at")
        return [dict(zip(keys, r)) for r in rows]

    def counts(self) -> dict:
        """{"served": pairs served, "votes": votes cast}."""
        (served, voted), = self._read("SELECT (SELECT count(*) FROM pairs), (SELECT count(*) FROM votes)")
        return {"served": served, "votes": voted}


# ----------------------------------------------------------------------------- analysis


def read_votes(path: str | Path) -> list[dict]:
    """The votes of an existing database (never created here); VotesError if it cannot be used."""
    return VoteStore(path, create=False).votes()
