"""Request bodies of the node API, validated at the edge (bad input changes nothing)."""
from __future__ import annotations

import json
from typing import Literal, TypeVar

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

M = TypeVar("M", bound=BaseModel)


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class PowerBody(_Body):
    action: Literal["start", "stop", "restart", "kill"]
    wait_seconds: int = Field(default=0, ge=0, le=300)


class CreateServerBody(_Body):
    uuid: str = Field(pattern=r"^[0-9a-fA-F-]{36}$")
    start_on_completion: bool = False


class CommandsBody(_Body):
    commands: list[str] = Field(min_length=1, max_length=100)


class DenyBody(_Body):
    jtis: list[str] = Field(max_length=10000)


class DeauthorizeBody(_Body):
    user: str = Field(min_length=1)
    servers: list[str] = Field(default_factory=list, max_length=10000)


class BackupBody(_Body):
    adapter: Literal["wings"]
    uuid: str = Field(pattern=r"^[0-9a-fA-F-]{36}$")
    ignore: str = ""


class RestoreBody(_Body):
    adapter: Literal["wings"]
    truncate_directory: bool = False
    download_url: str | None = None


def unprocessable(message: str, fields: dict[str, str] | None = None) -> web.HTTPException:
    body = {"error": message}
    if fields:
        body["errors"] = fields
    return web.HTTPUnprocessableEntity(text=json.dumps(body), content_type="application/json")


async def parse_body(request: web.Request, model: type[M]) -> M:
    """Parse and validate a JSON body, or raise 422 naming each bad field."""
    try:
        raw = await request.read()
        doc = json.loads(raw or b"null")
    except (ValueError, UnicodeDecodeError):
        raise unprocessable("The request body is not valid JSON.") from None
    if not isinstance(doc, dict):
        raise unprocessable("The request body must be a JSON object.")
    try:
        return model.model_validate(doc)
    except ValidationError as e:
        fields = {".".join(str(p) for p in err["loc"]) or "body": err["msg"] for err in e.errors()}
        first = next(iter(fields.items()))
        raise unprocessable(f"{first[0]}: {first[1]}", fields) from None
