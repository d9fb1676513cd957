"""What each v1 operation takes, for the OpenAPI document.

The v1 handlers read their inputs by hand (query parameters, overlaid with the JSON body's
fields), so FastAPI cannot see them. Keyed by path, whatever methods the path serves: a
method without a body takes these as query parameters, a method with one as JSON properties.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from pgqueue.web.openapi import NAME, Declared, declare


def _name(description: str) -> dict[str, Any]:
    return {**NAME, "description": description}


def _integer(description: str, **bounds: int) -> dict[str, Any]:
    return {"type": "integer", "description": description, **bounds}


TOPIC = _name("The topic's name.")
# Any text: a topic that does not exist lists nothing, an empty one means every topic.
ANY_TOPIC = {"type": "string", "description": "Only this topic (all topics when left out)."}
SUBSCRIBER_ID = _integer("The id /v1/subscribe returned.")

INPUTS: dict[str, Declared] = {
    "/topic": Declared(
        {
            "topic": TOPIC,
            "description": {"type": "string", "minLength": 1, "description": "What it holds."},
        },
        required=("topic", "description"),
        examples=({"topic": "orders", "description": "Orders placed in the shop"},),
    ),
    "/topic_delete": Declared({"topic": TOPIC}, required=("topic",)),
    "/topics": Declared({"topic": ANY_TOPIC}),
    "/publish": Declared(
        {
            "topic": TOPIC,
            "message": {
                "minLength": 1,
                "description": "The text (a JSON body may give another value: it is stored as "
                "text).",
            },
        },
        required=("topic", "message"),
        examples=({"topic": "orders", "message": "order 1 placed"},),
    ),
    "/topic_messages": Declared({"topic": ANY_TOPIC}),
    "/topic_subscribers": Declared({"topic": ANY_TOPIC}),
    "/subscribe": Declared({"topic": TOPIC}, required=("topic",)),
    "/unsubscribe": Declared({"subscriber_id": SUBSCRIBER_ID}, required=("subscriber_id",)),
    "/get_message": Declared(
        {
            "subscriber_id": SUBSCRIBER_ID,
            "num_messages": _integer("How many messages, 1 to 20.", minimum=1, maximum=20),
        },
        required=("subscriber_id",),
    ),
    "/ack_message": Declared(
        {
            "subscriber_id": SUBSCRIBER_ID,
            "offset": _integer("The last offset processed; the position moves there.", minimum=0),
            "epoch": _integer(
                "The _epoch get_message returned: the ack is skipped if the subscriber was "
                "reset since."
            ),
        },
        required=("subscriber_id", "offset"),
    ),
    "/topic_reset": Declared(
        {
            "topic": TOPIC,
            "offset": _integer("The offset every subscriber receives next.", minimum=1),
        },
        required=("topic",),
    ),
}


def document(app: FastAPI, prefix: str) -> None:
    for path, inputs in INPUTS.items():
        declare(app, prefix + path, inputs)
