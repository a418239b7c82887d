"""Blocking work per message, in the server's thread pool: a word-count
database (SQLite, whose calls block) that every client can add to and query.

From the repository root:

    python -m reactor --proto ws --app examples.thread_pool_app:app --threads 4
    python examples/thread_pool_app.py --port 9501

Send ``add some words`` to store words, ``top`` for the five most frequent.
The query runs in a pool thread (``server.run_in_thread``); its result is
sent from the future's done-callback, which runs on the reactor thread. The
reactor keeps serving every other connection while a query runs.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
import threading

from reactor.app import WebSocketApp
from reactor.concurrency import ThreadPoolFull
from reactor.server import main

MAX_WORDS = 100  # per message: one job stays short


class WordCounts(WebSocketApp):
    def __init__(self, path: str | None = None) -> None:
        if path is None:  # a scratch database, removed with the process's temp folder
            self.scratch = tempfile.TemporaryDirectory(prefix="wordcounts-")
            path = os.path.join(self.scratch.name, "words.db")
        self.path = path
        self.local = threading.local()  # one SQLite connection per pool thread

    def db(self) -> sqlite3.Connection:
        db = getattr(self.local, "db", None)
        if db is None:  # writers from several threads wait for each other (timeout)
            db = self.local.db = sqlite3.connect(self.path, timeout=10)
            db.execute("CREATE TABLE IF NOT EXISTS words (word TEXT PRIMARY KEY, n INTEGER)")
        return db

    def on_message(self, conn, data):
        if not isinstance(data, str):
            conn.send("text only")
            return
        try:
            future = self.server.run_in_thread(self.handle, data)
        except ThreadPoolFull:
            conn.send("busy, try again")
            return
        future.add_done_callback(lambda done: self.reply(conn, done))

    def handle(self, text: str) -> str:
        """Runs in a pool thread: blocking calls are fine here."""
        command, _, rest = text.partition(" ")
        db = self.db()
        if command == "add":
            words = rest.lower().split()[:MAX_WORDS]
            with db:
                db.executemany(
                    "INSERT INTO words VALUES (?, 1) ON CONFLICT(word) DO UPDATE SET n = n + 1",
                    [(word,) for word in words],
                )
            return f"added {len(words)}"
        if command == "top":
            rows = db.execute("SELECT word, n FROM words ORDER BY n DESC, word LIMIT 5")
            return " ".join(f"{word}={n}" for word, n in rows) or "(empty)"
        return "commands: add WORDS..., top"

    def reply(self, conn, future):
        """On the reactor thread (a done-callback): conn.send directly."""
        if future.exception() is not None:
            conn.send(f"error: {future.exception()}")
        else:
            conn.send(future.result())


app = WordCounts

if __name__ == "__main__":
    raise SystemExit(main(app, threads=4))  # every option of python -m reactor (--threads too)
