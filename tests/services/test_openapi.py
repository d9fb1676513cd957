"""The OpenAPI document says what the server does; Swagger works offline and its examples are
safe to send as they are."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
import pytest
from openapi_spec_validator import validate

from pgqueue.settings import Settings
from pgqueue.web.combined import create_app
from tests.services.conftest import RunningServer

TOKENS: dict[str, Any] = {"admin-token": ["admin"]}
OPEN_ROUTES = {"/healthz", "/readyz"}


@pytest.fixture
def document() -> dict[str, Any]:
    return create_app(Settings(api_tokens=TOKENS)).openapi()


def operations(doc: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            yield path, method, operation


def resolve(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if ref is None:
        return schema
    found: dict[str, Any] = doc["components"]["schemas"][ref.rsplit("/", 1)[1]]
    return found


def test_the_document_is_valid_openapi(document: dict[str, Any]) -> None:
    validate(document)
    ids = [operation["operationId"] for _, _, operation in operations(document)]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)


def test_errors_are_documented_with_our_error_body(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    assert "HTTPValidationError" not in schemas
    assert set(schemas["ErrorBody"]["required"]) == {"error", "detail"}
    error_body = {"$ref": "#/components/schemas/ErrorBody"}
    for path, method, operation in operations(document):
        responses = operation["responses"]
        assert responses["503"]["content"]["application/json"]["schema"] == error_body
        takes_input = "requestBody" in operation or operation.get("parameters")
        if takes_input:
            assert responses["422"]["content"]["application/json"]["schema"] == error_body
        if "requestBody" in operation:
            assert {"413", "415"} <= set(responses), (method, path)
        if "{" in path:
            assert "404" in responses, (method, path)


def test_guarded_routes_declare_the_bearer_scheme(document: dict[str, Any]) -> None:
    (name, scheme), *others = document["components"]["securitySchemes"].items()
    assert (scheme["type"], scheme["scheme"], others) == ("http", "bearer", [])
    for path, method, operation in operations(document):
        if path in OPEN_ROUTES:
            assert "security" not in operation
        else:
            assert operation["security"] == [{name: []}], (method, path)
            assert {"401", "403"} <= set(operation["responses"]), (method, path)
            assert "WWW-Authenticate" in operation["responses"]["401"]["headers"]


def test_v1_operations_declare_their_inputs(document: dict[str, Any]) -> None:
    v1 = [(p, m, o) for p, m, o in operations(document) if p.startswith("/v1/")]
    assert v1
    for path, method, operation in v1:
        if method in ("post", "put", "patch"):
            schema = operation["requestBody"]["content"]["application/json"]["schema"]
            assert schema["properties"], (method, path)
        else:
            assert operation["parameters"], (method, path)
    publish = document["paths"]["/v1/publish"]["post"]["requestBody"]
    assert publish["content"]["application/json"]["schema"]["required"] == ["topic", "message"]


def test_every_operation_and_input_is_described(document: dict[str, Any]) -> None:
    for path, method, operation in operations(document):
        assert operation.get("description"), (method, path)
        for parameter in operation.get("parameters", ()):
            assert parameter.get("description"), (method, path, parameter["name"])
        body = operation.get("requestBody")
        if body:
            schema = resolve(document, body["content"]["application/json"]["schema"])
            for name, field in schema["properties"].items():
                assert field.get("description"), (method, path, name)


def test_every_field_of_every_body_is_described(document: dict[str, Any]) -> None:
    for name, schema in document["components"]["schemas"].items():
        for field, spec in schema.get("properties", {}).items():
            assert spec.get("description"), f"{name}.{field}"


def test_the_publish_example_publishes_once_now(document: dict[str, Any]) -> None:
    body = document["paths"]["/topics/{topic}/messages"]["post"]["requestBody"]
    # Swagger UI's "Try it out" sends the schema's first example when it has one.
    example = resolve(document, body["content"]["application/json"]["schema"])["examples"][0]
    assert "payload" in example
    assert not {"delay_ms", "idempotency_key"} & set(example)


async def test_the_publish_example_sent_twice_stores_two_messages_due_now(
    document: dict[str, Any], http: httpx.AsyncClient
) -> None:
    schema = document["paths"]["/topics/{topic}/messages"]["post"]["requestBody"]
    example = resolve(document, schema["content"]["application/json"]["schema"])["examples"][0]
    assert (await http.post("/topics", json={"name": "orders"})).status_code == 201
    first = await http.post("/topics/orders/messages", json=example)
    second = await http.post("/topics/orders/messages", json=example)
    assert (first.status_code, second.status_code) == (201, 201)
    assert first.json()["offset"] != second.json()["offset"]
    stored = (await http.get("/topics/orders/messages")).json()["messages"]
    assert [m["available_at"] for m in stored] == [None, None]


async def test_options_and_other_methods_list_what_the_path_serves(
    http: httpx.AsyncClient,
) -> None:
    for method in ("OPTIONS", "PUT"):
        answer = await http.request(method, "/topics/orders")
        assert answer.status_code == 405
        assert answer.headers["allow"] == "DELETE, GET, PATCH"
        assert answer.json()["error"] == "method_not_allowed"
    answer = await http.request("OPTIONS", "/topics/orders/subscribers/billing/dead-letters")
    assert answer.headers["allow"] == "DELETE, GET"


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_the_docs_pages_load_everything_from_the_server(
    page: str, server: RunningServer, http: httpx.AsyncClient
) -> None:
    html = (await http.get(page)).text
    referenced = re.findall(r"""(?:src|href|spec-url)="([^"]+)"|url: '([^']+)'""", html)
    urls = [a or b for a, b in referenced]
    assert any(u.endswith(".js") for u in urls) and any("openapi.json" in u for u in urls)
    assert not re.search(r"https?://", html), "the page names an outside host"
    for url in urls:
        absolute = urljoin(server.url + page, url)
        assert urlsplit(absolute).netloc == urlsplit(server.url).netloc, url
        asset = await http.get(absolute)
        assert asset.status_code == 200 and len(asset.content) > 100, url


async def test_bodies_take_only_the_types_the_document_gives(http: httpx.AsyncClient) -> None:
    assert (await http.post("/topics", json={"name": "orders"})).status_code == 201
    billing = await http.post("/topics/orders/subscribers", json={"name": "billing"})
    refused = [
        ("/topics/orders/subscribers", {"name": "audit", "max_attempts": "5"}),
        ("/topics/orders/subscribers/billing/dead-letters/replay", {"last": True}),
        ("/topics/orders/reset", {"to": "earliest", "dry_run": "yes"}),
        ("/topics/orders/reset", {"to": 2**60}),
    ]
    for path, body in refused:
        answer = await http.post(path, json=body)
        assert (answer.status_code, answer.json()["error"]) == (422, "invalid_request"), body
    # JSON Schema counts 2.0 as an integer, and so does the server.
    claim = await http.post(
        f"/subscribers/{billing.json()['subscriber_id']}/claim", json={"max_messages": 2.0}
    )
    assert claim.status_code == 200
    assert [s["name"] for s in (await http.get("/topics/orders/subscribers")).json()] == ["billing"]


async def test_subscribers_of_an_unknown_topic_are_not_found(http: httpx.AsyncClient) -> None:
    answer = await http.get("/topics/nowhere/subscribers")
    assert (answer.status_code, answer.json()["error"]) == (404, "topic_not_found")


async def test_v1_takes_a_topic_only_as_a_string(http: httpx.AsyncClient) -> None:
    answer = await http.post("/v1/topic", json={"topic": False, "description": "x"})
    assert answer.status_code == 422
    assert (await http.get("/topics")).json() == []
