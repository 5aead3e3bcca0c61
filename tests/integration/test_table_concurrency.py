"""A table read while it is appended to: the data folder's server survives.

Tiled hands its one DuckDB connection to every request thread at once.
Before the folder's storage serialised its use, a reader polling a table
that a writer appended to (a viewer of a live derived run) got HTTP 500s
(``Attempting to execute an unsuccessful or closed pending query
result``), the writer's appends failed (``cannot commit - no transaction
is active``) and the server process died: in every one of three runs of
this test's load (400 appends, two readers) against a real ``serve``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pytest
from helpers import ServeProcess, free_port, start_serve

pytestmark = [pytest.mark.tiled, pytest.mark.slow]

APPENDS = 300
ROWS = 20


@pytest.fixture
def served(tmp_path) -> Iterator[ServeProcess]:
    srv = start_serve(tmp_path / "xsvs-data", port=free_port())
    try:
        yield srv
    finally:
        srv.close()


def test_reads_during_appends_all_succeed_and_see_whole_appends(served):
    from tiled.client import from_uri

    uri = f"http://127.0.0.1:{served.port}/api/v1"
    key = served.folder.key_file.read_text().strip()
    writer = from_uri(uri, api_key=key)
    schema = pa.schema([("value", pa.float64()), ("index", pa.int64())])
    table = writer.create_appendable_table(schema=schema, key="live")
    table.append_partition(0, pa.table({"value": [0.0], "index": [0]}))
    errors: list[BaseException] = []
    seen: list[list[int]] = [[], []]
    done = threading.Event()

    clients = [from_uri(uri, api_key=key) for _ in seen]

    def read(client: object, into: list[int]) -> None:
        try:
            while not done.is_set():
                into.append(len(client["live"].read()))  # type: ignore[index]
        except BaseException as err:
            errors.append(err)

    readers = [
        threading.Thread(target=read, args=(c, s))
        for c, s in zip(clients, seen, strict=True)
    ]
    for thread in readers:
        thread.start()
    rng = np.random.default_rng(7)
    try:
        for i in range(APPENDS):
            rows = pa.table(
                {
                    "value": rng.random(ROWS),
                    "index": np.arange(ROWS, dtype=np.int64) + i * ROWS,
                }
            )
            table.append_partition(0, rows)
    except BaseException as err:
        errors.append(err)
    finally:
        done.set()
        for thread in readers:
            thread.join(timeout=120)
    assert not errors, f"{errors[0]!r}\n{served.log()[-3000:]}"
    assert served.proc.poll() is None, served.log()[-3000:]
    assert "500 Internal Server Error" not in served.log()
    final = writer["live"].read()
    assert len(final) == 1 + APPENDS * ROWS
    assert final["index"].tolist()[1:] == list(range(APPENDS * ROWS))
    for counts in seen:
        assert counts, "a reader read nothing"
        # every read saw whole appends, in order
        assert all((n - 1) % ROWS == 0 for n in counts)
        assert counts == sorted(counts)
    for client in (writer, *clients):
        client.context.close()
