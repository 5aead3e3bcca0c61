"""Per-request work of the folder app, and several apps in one process.

The folder app (:func:`xsvs_bluesky.storage._app.build_folder_app`) keeps
its own copy of Tiled's settings through ``app.dependency_overrides`` and
resolves that override into its routes once, when built: a request then
builds no dependency tree.  Several Tiled apps live in one process (the
servers of two data folders, an app of Tiled's own ``build_app``); each must
accept its own key only and still create and read back nodes.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.dependencies import utils as fastapi_dependencies

from xsvs_bluesky.storage import Catalogs, open_catalogs
from xsvs_bluesky.storage._app import (
    _thread_server,
    build_folder_app,
    catalog_adapter,
    no_delay,
)
from xsvs_bluesky.storage._folder import DataFolder


@pytest.fixture
def two_folders(tmp_path: Path) -> Iterator[tuple[Catalogs, Catalogs]]:
    """Two data folders, each served in this process with its own key."""
    with (
        open_catalogs(data_dir=tmp_path / "a") as first,
        open_catalogs(data_dir=tmp_path / "b") as second,
    ):
        yield first, second


def _get(cats: Catalogs, key: str | None, path: str = "/metadata/") -> httpx.Response:
    """GET ``path`` of the API (the root node's metadata: the key is checked)."""
    headers = {} if key is None else {"Authorization": f"Apikey {key}"}
    with httpx.Client(trust_env=False, timeout=30) as client:
        return client.get(cats.uri + path, headers=headers)


def test_a_request_builds_no_dependency_tree(two_folders, monkeypatch):
    first, _ = two_folders
    assert first.api_key is not None
    calls: list[Any] = []
    real = fastapi_dependencies.get_dependant

    def counting(**kwargs: Any) -> Any:
        calls.append(kwargs["call"])
        return real(**kwargs)

    # FastAPI's solve_dependencies looks the function up in its module at
    # every call; with the overrides provider on a route, it builds a tree
    # for each of the route's sub-dependencies per request (dozens).
    monkeypatch.setattr(fastapi_dependencies, "get_dependant", counting)
    for path in ("/", "/metadata/", "/search/", "/metadata/raw", "/search/raw"):
        response = _get(first, first.api_key, path)
        assert response.status_code == 200, (path, response.text)
    assert calls == []
    # the settings (with this app's key) still reach the routes
    assert _get(first, "not-the-key").status_code == 401
    assert _get(first, None).status_code == 401


def test_the_override_is_resolved_into_each_route_of_the_app(tmp_path):
    from fastapi.routing import APIRoute
    from tiled.server.settings import get_settings

    folder = DataFolder.at(tmp_path / "c")
    app = build_folder_app(catalog_adapter(folder, ()), "thekey0123")
    own = app.dependency_overrides[get_settings]
    # Tiled's startup reads the settings here
    assert own().single_user_api_key == "thekey0123"

    def calls(dependant: Any) -> Iterator[Any]:
        for sub in dependant.dependencies:
            yield sub.call
            yield from calls(sub)

    contexts = [
        context
        for route in app.router.routes
        if hasattr(route, "effective_route_contexts")
        for context in route.effective_route_contexts()
        if isinstance(context.original_route, APIRoute)
    ]
    assert len(contexts) > 20
    for context in contexts:
        assert context.dependency_overrides_provider is None, context.path
        assert get_settings not in set(calls(context.dependant)), context.path
    reads = [c for c in contexts if c.path == "/api/v1/metadata/{path:path}"]
    assert reads and all(own in set(calls(c.dependant)) for c in reads)
    # the routes of Tiled's routers (which another app may include) are untouched
    for context in reads:
        assert get_settings in set(calls(context.original_route.dependant))


def _round_trip(uri: str, api_key: str, name: str) -> None:
    """Create a container and an array in it; read them back."""
    from tiled.client import from_uri

    client = from_uri(uri, api_key=api_key)
    try:
        node = client.create_container(name)
        node.write_array(np.arange(6, dtype="int32"), key="values")
        again = client[name]
        assert again.structure_family == "container"
        assert again["values"].structure_family == "array"
        assert list(again["values"].read()) == [0, 1, 2, 3, 4, 5]
    finally:
        client.context.close()


@contextmanager
def _plain_tiled(folder: DataFolder, api_key: str) -> Iterator[str]:
    """Serve ``folder`` with an app of Tiled's ``build_app`` alone; yield its URI.

    The app a ``SimpleTiledServer`` builds (Tiled's process-wide settings),
    served here without its ``tiled catalog init`` subprocess.
    """
    import uvicorn
    from tiled.config import Authentication
    from tiled.server.app import build_app

    app = build_app(
        catalog_adapter(folder, ()),
        authentication=Authentication(single_user_api_key=api_key),
    )
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    no_delay(sock)
    uri = f"http://127.0.0.1:{sock.getsockname()[1]}"
    config = uvicorn.Config(app, loop="asyncio", lifespan="on", log_level="warning")
    server = _thread_server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, daemon=True
    )
    thread.start()
    try:
        deadline = time.monotonic() + 60
        with httpx.Client(trust_env=False, timeout=5) as client:
            while True:
                assert thread.is_alive() and time.monotonic() < deadline
                try:
                    if client.get(uri + "/healthz").is_success:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.05)
        yield uri + "/api/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.mark.slow
def test_apps_in_one_process_each_accept_only_their_own_key(two_folders, tmp_path):
    first, second = two_folders
    assert first.api_key and second.api_key and first.api_key != second.api_key
    with _plain_tiled(DataFolder.at(tmp_path / "plain"), "plainkey0123") as plain_uri:
        for cats, own, other in (
            (first, first.api_key, second.api_key),
            (second, second.api_key, first.api_key),
        ):
            assert _get(cats, own).status_code == 200
            assert _get(cats, other).status_code == 401
            assert _get(cats, "plainkey0123").status_code == 401
            _round_trip(cats.uri, own, "round-trip")
        with httpx.Client(trust_env=False, timeout=30) as client:
            for key, status in (
                ("plainkey0123", 200),
                (first.api_key, 401),
                (second.api_key, 401),
            ):
                answer = client.get(
                    plain_uri + "/metadata/",
                    headers={"Authorization": f"Apikey {key}"},
                )
                assert answer.status_code == status, key
        _round_trip(plain_uri, "plainkey0123", "round-trip")
