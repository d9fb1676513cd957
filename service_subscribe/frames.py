"""The WebSocket frame protocol: JSON objects with a "type".

Server → client: welcome, message, reset, published, error.
Client → server: ack, nack, seek, publish.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, TypeAdapter

from pgqueue.web.fields import Millis, Offset, Target


class Frame(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- server → client ------------------------------------------------------------------------


class Welcome(Frame):
    type: Literal["welcome"] = "welcome"
    topic: str
    subscriber: str
    position: int
    ephemeral: bool
    ack: Literal["manual", "auto"]
    prefetch: int


class MessageFrame(Frame):
    type: Literal["message"] = "message"
    topic: str
    offset: int
    key: str | None
    headers: dict[str, str]
    payload: Any
    published_at: datetime
    attempt: int


class ResetFrame(Frame):
    type: Literal["reset"] = "reset"
    topic: str
    subscriber: str
    position: int | None


class Published(Frame):
    type: Literal["published"] = "published"
    topic: str
    offset: int
    ref: str | None = None


class ErrorFrame(Frame):
    type: Literal["error"] = "error"
    code: str
    detail: Any
    id: str | None = Field(
        default=None,
        exclude_if=lambda value: value is None,
        description="Internal errors only: the id the server logged the error under.",
    )


# -- client → server ------------------------------------------------------------------------


class Ack(Frame):
    type: Literal["ack"]
    offsets: list[Offset] = Field(min_length=1, max_length=10_000)


class Nack(Frame):
    type: Literal["nack"]
    offset: Offset
    delay_ms: Millis | None = None
    error: str | None = Field(default=None, max_length=10_000)


class Seek(Frame):
    type: Literal["seek"]
    to: Target


class Publish(Frame):
    type: Literal["publish"]
    topic: str | None = None
    payload: JsonValue
    headers: dict[str, str] | None = None
    key: str | None = None
    ref: str | None = Field(default=None, max_length=200)


ClientFrame = Annotated[Ack | Nack | Seek | Publish, Field(discriminator="type")]
CLIENT_FRAME: TypeAdapter[Ack | Nack | Seek | Publish] = TypeAdapter(ClientFrame)


def protocol_schema() -> dict[str, Any]:
    """JSON Schema of every frame, for the docs (WebSocket routes are not in OpenAPI)."""
    server = TypeAdapter(Welcome | MessageFrame | ResetFrame | Published | ErrorFrame)
    return {
        "client_to_server": CLIENT_FRAME.json_schema(),
        "server_to_client": server.json_schema(),
    }
