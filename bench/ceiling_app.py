"""The ceiling: a bare Starlette app, served by uvicorn with the same settings as ``carnet serve``.

``GET /json`` answers a small JSON object; ``POST /echo`` parses the JSON body and serialises it
back (the HTTP + JSON floor of a Bundle upload). Run by the benchmarks as
``python -m uvicorn --app-dir bench ceiling_app:app --workers 2 --no-access-log``.
"""

from __future__ import annotations

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


async def json_get(request: Request) -> Response:
    return JSONResponse({"resourceType": "OperationOutcome", "status": "ok"})


async def echo(request: Request) -> Response:
    body = await request.body()
    return Response(orjson.dumps(orjson.loads(body)), media_type="application/fhir+json")


app = Starlette(routes=[Route("/json", json_get), Route("/echo", echo, methods=["POST"])])
