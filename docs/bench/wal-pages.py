#!/usr/bin/env python3
"""Pages written per commit on SQLite, by table and index.

Every commit appends each page it changed to the WAL, whole (4 KiB here),
so at group commit the number of distinct pages a batch dirties is what the
writer pays for at COMMIT: a `pwrite` per frame header and per page, the
checksums, and the sync. This reads the commits still in a database's WAL
and says which b-trees their pages belong to.

Usage (while the server that writes the database still runs, so that the
WAL is still there; the files are copied first and nothing is changed):

    python3 docs/bench/wal-pages.py path/to/calltrail.db

Needs Python's sqlite3 module with the `dbstat` table (Debian's has it).
"""

import collections
import os
import shutil
import sqlite3
import struct
import sys
import tempfile


def main(path: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db = os.path.join(tmp, "copy.db")
        shutil.copyfile(path + "-wal", db + "-wal")
        shutil.copyfile(path, db)
        with open(db + "-wal", "rb") as f:
            wal = f.read()
        commits = frames_by_commit(wal)
        if not commits:
            sys.exit("no commit in the WAL (was it checkpointed and reset just now?)")
        conn = sqlite3.connect(db)
        owner = {page: name for name, page in conn.execute("SELECT name, pageno FROM dbstat")}
        conn.close()
    pages = collections.Counter()
    for commit in commits:
        for page in set(commit):
            pages[owner.get(page, "(freelist or new)")] += 1
    n = len(commits)
    total = sum(len(set(c)) for c in commits)
    print(f"{n} commits in the WAL, {total / n:.1f} distinct pages each")
    print(f"{'b-tree':40} pages per commit")
    for name, count in pages.most_common():
        print(f"{name:40} {count / n:.2f}")


def frames_by_commit(wal: bytes) -> list[list[int]]:
    """Page numbers of each committed transaction, oldest first (frames of
    the current WAL generation only: their salts match the header's)."""
    if len(wal) < 32:
        return []
    _magic, _version, page_size, _seq, salt1, salt2, _c1, _c2 = struct.unpack(">8I", wal[:32])
    commits, current, offset = [], [], 32
    while offset + 24 + page_size <= len(wal):
        page, commit_size, s1, s2 = struct.unpack(">4I", wal[offset : offset + 16])
        if (s1, s2) != (salt1, salt2):
            break
        current.append(page)
        if commit_size:
            commits.append(current)
            current = []
        offset += 24 + page_size
    return commits


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
