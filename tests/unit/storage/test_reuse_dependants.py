"""FastAPI reuses the dependency trees it rebuilds per request (Tiled's overrides)."""

from __future__ import annotations

import asyncio
from typing import Annotated

import fastapi.dependencies.utils as dependency_utils
import httpx
from fastapi import Depends, FastAPI

from xsvs_bluesky.storage._app import reuse_dependants


def _settings() -> str:
    return "original"


def _overridden() -> str:
    return "override"


def _depth(value: Annotated[str, Depends(_settings)]) -> str:
    return value


def test_per_request_trees_are_reused_and_overrides_still_apply():
    reuse_dependants()
    reuse_dependants()  # idempotent: one wrapper
    build = dependency_utils.get_dependant
    assert getattr(build, "xsvs_reused", False)
    # the per-request form (a name, no own scopes) is built once
    first = build(path="/x", call=_depth, name="value", parent_oauth_scopes=[])
    again = build(path="/x", call=_depth, name="value", parent_oauth_scopes=[])
    assert first is again
    # route building (no name) gets a fresh tree each time
    assert build(path="/x", call=_depth) is not build(path="/x", call=_depth)

    app = FastAPI()

    @app.get("/value")
    def value(setting: Annotated[str, Depends(_depth)]) -> str:
        return setting

    async def answers() -> list[str]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://x") as cl:
            out = [(await cl.get("/value")).json()]
            app.dependency_overrides[_settings] = _overridden
            for _ in range(3):  # the reused trees still resolve the override
                out.append((await cl.get("/value")).json())
            app.dependency_overrides.clear()
            out.append((await cl.get("/value")).json())
        return out

    assert asyncio.run(answers()) == ["original", *["override"] * 3, "original"]
