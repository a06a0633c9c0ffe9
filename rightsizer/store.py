"""Per-thread history in SQLite: one row per thread per interval in which it did anything.

Schema (times are integer milliseconds since the Unix epoch, CPU and run-queue delay are
integer microseconds within the interval):

- ``containers``: id, namespace, pod, pod_uid, container, node.
- ``threads``: id, container_id, grp (name group), comm, tgid, tid.
- ``intervals``: container_id, end_ms, ms, threads (present in the snapshot). One row per
  container and interval, so an interval in which a thread has no row counts as idle.
- ``deltas``: thread_id, end_ms, cpu_us, runq_us, slices, vol, nonvol. Rows of idle
  threads are not stored, which keeps large, mostly idle pools cheap.
- ``owners``: pod_uid, kind, name of the workload a pod belonged to, so the history of a
  deleted pod still counts for its workload.

Both time-series tables are WITHOUT ROWID tables keyed by (owner id, end_ms), so reading
one container's window and deleting expired rows are range scans.
"""

import logging
import sqlite3
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from rightsizer.deltas import ContainerInterval
from rightsizer.history import ContainerHistory, ContainerKey, ThreadInfo
from rightsizer.names import name_group
from temper.errors import TemperError

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS containers (
    id INTEGER PRIMARY KEY,
    namespace TEXT NOT NULL, pod TEXT NOT NULL, pod_uid TEXT NOT NULL,
    container TEXT NOT NULL, node TEXT NOT NULL,
    UNIQUE (pod_uid, container)
);
CREATE TABLE IF NOT EXISTS threads (
    id INTEGER PRIMARY KEY,
    container_id INTEGER NOT NULL REFERENCES containers (id),
    grp TEXT NOT NULL, comm TEXT NOT NULL, tgid INTEGER NOT NULL, tid INTEGER NOT NULL,
    UNIQUE (container_id, tid, comm)
);
CREATE TABLE IF NOT EXISTS intervals (
    container_id INTEGER NOT NULL, end_ms INTEGER NOT NULL, ms INTEGER NOT NULL,
    threads INTEGER NOT NULL,
    PRIMARY KEY (container_id, end_ms)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS owners (
    pod_uid TEXT PRIMARY KEY, kind TEXT NOT NULL, name TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS deltas (
    thread_id INTEGER NOT NULL, end_ms INTEGER NOT NULL,
    cpu_us INTEGER NOT NULL, runq_us INTEGER NOT NULL,
    slices INTEGER NOT NULL, vol INTEGER NOT NULL, nonvol INTEGER NOT NULL,
    PRIMARY KEY (thread_id, end_ms)
) WITHOUT ROWID;
"""


class HistoryStoreError(TemperError):
    """The SQLite history file cannot be opened or has an unknown schema."""


class HistoryStore:
    """Reads and writes the history file; one instance per process."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        try:
            self._db = sqlite3.connect(self.path)
        except sqlite3.Error as error:
            raise self._open_error(error) from error
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION):
                raise HistoryStoreError(
                    f"history file {self.path} has schema version {version}, expected "
                    f"{SCHEMA_VERSION}; move it aside or point --history-path elsewhere"
                )
            self._db.executescript(_SCHEMA)
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            self._db.commit()
        except (sqlite3.Error, HistoryStoreError) as error:
            self._db.close()
            if isinstance(error, HistoryStoreError):
                raise
            raise self._open_error(error) from error
        self._container_ids: dict[tuple[str, str], int] = {}
        self._thread_ids: dict[tuple[int, int, str], int] = {}

    @classmethod
    def open_existing(cls, path: str | Path) -> "HistoryStore":
        """Open a history file that must exist already (reading commands never create one)."""
        if not Path(path).is_file():
            raise HistoryStoreError(
                f"history file {path} does not exist; run `temper rightsize collect` first "
                "or point --history-path at its file"
            )
        return cls(path)

    def _open_error(self, error: sqlite3.Error) -> HistoryStoreError:
        return HistoryStoreError(
            f"cannot open history file {self.path}: {error}; check the path and its "
            "directory permissions (--history-path)"
        )

    def close(self) -> None:
        """Close the database."""
        self._db.close()

    def __enter__(self) -> "HistoryStore":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _container_id(self, interval: ContainerInterval) -> int:
        cache_key = (interval.pod_uid, interval.container)
        cached = self._container_ids.get(cache_key)
        if cached is not None:
            return cached
        self._db.execute(
            "INSERT OR IGNORE INTO containers (namespace, pod, pod_uid, container, node) "
            "VALUES (?, ?, ?, ?, ?)",
            (interval.namespace, interval.pod, interval.pod_uid, interval.container, interval.node),
        )
        row = self._db.execute(
            "SELECT id FROM containers WHERE pod_uid = ? AND container = ?", cache_key
        ).fetchone()
        self._container_ids[cache_key] = int(row[0])
        return int(row[0])

    def _thread_id(self, container_id: int, tgid: int, tid: int, comm: str) -> int:
        cache_key = (container_id, tid, comm)
        cached = self._thread_ids.get(cache_key)
        if cached is not None:
            return cached
        self._db.execute(
            "INSERT OR IGNORE INTO threads (container_id, grp, comm, tgid, tid) "
            "VALUES (?, ?, ?, ?, ?)",
            (container_id, name_group(comm), comm, tgid, tid),
        )
        row = self._db.execute(
            "SELECT id FROM threads WHERE container_id = ? AND tid = ? AND comm = ?", cache_key
        ).fetchone()
        self._thread_ids[cache_key] = int(row[0])
        return int(row[0])

    def add(self, intervals: Iterable[ContainerInterval]) -> int:
        """Store intervals in one transaction; return the number of thread rows written."""
        rows = 0
        with self._db:
            for interval in intervals:
                container_id = self._container_id(interval)
                end_ms = round(interval.end_seconds * 1000)
                self._db.execute(
                    "INSERT OR REPLACE INTO intervals VALUES (?, ?, ?, ?)",
                    (
                        container_id,
                        end_ms,
                        round(interval.seconds * 1000),
                        interval.threads_present,
                    ),
                )
                values = [
                    (
                        self._thread_id(container_id, delta.tgid, delta.tid, delta.comm),
                        end_ms,
                        round(delta.cpu_seconds * 1e6),
                        round(delta.runq_delay_seconds * 1e6),
                        delta.timeslices,
                        delta.voluntary_switches,
                        delta.nonvoluntary_switches,
                    )
                    for delta in interval.deltas
                    if not delta.idle
                ]
                self._db.executemany("INSERT OR REPLACE INTO deltas VALUES (?,?,?,?,?,?,?)", values)
                rows += len(values)
        return rows

    def containers(self, since_seconds: float) -> list[ContainerKey]:
        """Return the containers with at least one interval ending after ``since_seconds``."""
        cursor = self._db.execute(
            "SELECT namespace, pod, pod_uid, container FROM containers c WHERE EXISTS "
            "(SELECT 1 FROM intervals i WHERE i.container_id = c.id AND i.end_ms > ?) "
            "ORDER BY namespace, pod, container",
            (round(since_seconds * 1000),),
        )
        return [ContainerKey(*row) for row in cursor]

    def latest_seconds(self) -> float | None:
        """Return the end of the newest stored interval, or None for an empty store."""
        row = self._db.execute("SELECT MAX(end_ms) FROM intervals").fetchone()
        return None if row[0] is None else row[0] / 1000

    def load(
        self, key: ContainerKey, since_seconds: float, until_seconds: float
    ) -> ContainerHistory:
        """Return the container's intervals ending in (since, until] as dense arrays."""
        since_ms, until_ms = round(since_seconds * 1000), round(until_seconds * 1000)
        row = self._db.execute(
            "SELECT id FROM containers WHERE pod_uid = ? AND container = ?",
            (key.pod_uid, key.container),
        ).fetchone()
        container_id = -1 if row is None else int(row[0])
        interval_rows = self._db.execute(
            "SELECT end_ms, ms FROM intervals WHERE container_id = ? AND end_ms > ? "
            "AND end_ms <= ? ORDER BY end_ms",
            (container_id, since_ms, until_ms),
        ).fetchall()
        thread_rows = self._db.execute(
            "SELECT id, tgid, tid, comm, grp FROM threads WHERE container_id = ? ORDER BY id",
            (container_id,),
        ).fetchall()

        # Scatter the delta rows into (interval, thread) arrays. Both id lists are sorted,
        # so a binary search maps each row to its cell.
        interval_ends = np.array([end_ms for end_ms, _ms in interval_rows], dtype=np.int64)
        thread_ids = np.array([thread_id for thread_id, *_rest in thread_rows], dtype=np.int64)
        delta_rows = self._db.execute(
            "SELECT d.thread_id, d.end_ms, d.cpu_us, d.runq_us, d.slices, d.vol, d.nonvol "
            "FROM deltas d JOIN threads t ON t.id = d.thread_id "
            "WHERE t.container_id = ? AND d.end_ms > ? AND d.end_ms <= ?",
            (container_id, since_ms, until_ms),
        ).fetchall()
        data = np.array(delta_rows, dtype=np.int64).reshape(-1, 7)
        rows = np.searchsorted(interval_ends, data[:, 1])
        rows = np.minimum(rows, max(len(interval_ends) - 1, 0))
        # A delta without its interval row (written by an interrupted run) is ignored.
        known = interval_ends[rows] == data[:, 1] if len(interval_ends) else rows < 0
        columns = np.searchsorted(thread_ids, data[known, 0])
        shape = (len(interval_rows), len(thread_rows))
        scales = (1e-6, 1e-6, 1.0, 1.0, 1.0)
        arrays = []
        for offset, scale in enumerate(scales):
            array = np.zeros(shape)
            array[rows[known], columns] = data[known, 2 + offset] * scale
            arrays.append(array)

        threads = tuple(
            ThreadInfo(tgid=tgid, tid=tid, comm=comm, group=group)
            for _id, tgid, tid, comm, group in thread_rows
        )
        used = np.flatnonzero((arrays[0] > 0).any(axis=0) | (arrays[1] > 0).any(axis=0))
        return ContainerHistory(
            key=key,
            end_seconds=np.array([end for end, _ in interval_rows], dtype=float) / 1000,
            seconds=np.array([ms for _, ms in interval_rows], dtype=float) / 1000,
            threads=tuple(threads[i] for i in used) if len(used) < len(threads) else threads,
            cpu_seconds=arrays[0][:, used],
            runq_delay_seconds=arrays[1][:, used],
            timeslices=arrays[2][:, used],
            voluntary_switches=arrays[3][:, used],
            nonvoluntary_switches=arrays[4][:, used],
        )

    def remember_owner(self, pod_uid: str, kind: str, name: str) -> None:
        """Record the workload that owns a pod."""
        with self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO owners VALUES (?, ?, ?)", (pod_uid, kind, name)
            )

    def owner(self, pod_uid: str) -> tuple[str, str] | None:
        """Return the (kind, name) recorded for a pod, or None."""
        row = self._db.execute(
            "SELECT kind, name FROM owners WHERE pod_uid = ?", (pod_uid,)
        ).fetchone()
        return None if row is None else (str(row[0]), str(row[1]))

    def prune(self, now_seconds: float, retention_days: float) -> int:
        """Delete intervals older than the retention and what no longer has rows.

        Returns the number of thread rows deleted.
        """
        cutoff_ms = round((now_seconds - retention_days * 86400) * 1000)
        with self._db:
            thread_ids = [(row[0], cutoff_ms) for row in self._db.execute("SELECT id FROM threads")]
            before = self._db.total_changes
            self._db.executemany(
                "DELETE FROM deltas WHERE thread_id = ? AND end_ms < ?", thread_ids
            )
            deleted = self._db.total_changes - before
            container_ids = [
                (row[0], cutoff_ms) for row in self._db.execute("SELECT id FROM containers")
            ]
            self._db.executemany(
                "DELETE FROM intervals WHERE container_id = ? AND end_ms < ?", container_ids
            )
            self._db.execute(
                "DELETE FROM threads WHERE NOT EXISTS "
                "(SELECT 1 FROM deltas d WHERE d.thread_id = threads.id)"
            )
            self._db.execute(
                "DELETE FROM containers WHERE NOT EXISTS "
                "(SELECT 1 FROM intervals i WHERE i.container_id = containers.id)"
            )
            self._db.execute(
                "DELETE FROM owners WHERE pod_uid NOT IN (SELECT pod_uid FROM containers)"
            )
        self._container_ids.clear()
        self._thread_ids.clear()
        return deleted
