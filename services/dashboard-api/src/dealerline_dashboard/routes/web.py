"""The built web UI: its files, and its page for any other path (a client-side route),
except under the API's, the sockets' and the ops routes' prefixes."""

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.requests import Request

router = APIRouter()

RESERVED = ("api", "ws", "docs", "openapi.json", "livez", "readyz", "metrics")


@router.get("/{path:path}", include_in_schema=False)
async def web_ui(path: str, request: Request) -> Response:
    first = path.split("/", 1)[0]
    if first in RESERVED:
        return JSONResponse({"detail": "Not Found"}, status_code=404)
    web_dir: Path = request.app.state.web_dir
    index = web_dir / "index.html"
    if not index.is_file():
        return PlainTextResponse(
            f"web UI not built; run make setup (expected {web_dir}/index.html)",
            status_code=503,
        )
    if path:
        candidate = (web_dir / path).resolve()
        if candidate.is_relative_to(web_dir) and candidate.is_file():
            return FileResponse(candidate)
    # A client-side route (/calls/sess_…): the app's page, which routes itself.
    return FileResponse(index, headers={"Cache-Control": "no-cache"})
