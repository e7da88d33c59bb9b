"""A response's error text, each route held to its own shape: {"error": "..."} (DESIGN.md), or
on the OpenAI-compatible routes OpenAI's {"error": {"message", "type", "param", "code"}}, which
the official client reads (service/errors.error_body)."""
from service.errors import is_openai_path


def error_message(response) -> str:
    body = response.json()
    if is_openai_path(response.request.url.path):
        assert isinstance(body.get("error"), dict) and {"message", "type", "param", "code"} <= set(body["error"]), body
        assert body["error"]["type"] == ("invalid_request_error" if response.status_code < 500 else "server_error") \
            or response.status_code in (401, 403, 404, 429), body
        return body["error"]["message"]
    assert isinstance(body.get("error"), str), body
    return body["error"]
