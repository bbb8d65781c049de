"""Hubs started together open one database at once (issue 14, item 1)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from sqlalchemy import Engine

from cloudhub.db import open_engine

THREADS = 8

T = TypeVar("T")


def at_once(url: str, call: Callable[[Engine], T]) -> list[T | Exception]:
    """THREADS engines on ``url`` each make ``call`` at the same moment: what each got."""
    engines = [open_engine(url) for _ in range(THREADS)]
    barrier = threading.Barrier(THREADS)

    def run(engine: Engine) -> T | Exception:
        barrier.wait()
        try:
            return call(engine)
        except Exception as exc:
            return exc

    try:
        with ThreadPoolExecutor(THREADS) as pool:
            return list(pool.map(run, engines))
    finally:
        for engine in engines:
            engine.dispose()


def journal_mode(engine: Engine) -> str:
    with engine.connect() as conn:
        return conn.exec_driver_sql("PRAGMA journal_mode").scalar_one()


def test_connections_opening_a_new_sqlite_file_together_all_succeed(tmp_path: Path) -> None:
    """Switching a new file to WAL needs its exclusive lock, and SQLite answers busy at
    once rather than wait for it: eight first connections at once, a hundred times over
    (without the retry in cloudhub/db.py about one round in fifteen failed)."""
    for n in range(100):
        results = at_once(f"sqlite:///{tmp_path / f'{n}.db'}", journal_mode)
        assert results == ["wal"] * THREADS, results
