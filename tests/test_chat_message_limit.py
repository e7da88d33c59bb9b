"""A chat's messages, and /tokenize's chat form's, are bounded before any is validated."""
import pytest

from inprocess_app import real_lm_client


@pytest.fixture(scope="module")
def demo():
    with real_lm_client(max_sequence_length=256, max_new_tokens=8) as client:
        yield client


@pytest.mark.parametrize("path", ["/tokenize", "/v1/chat/completions"])
def test_more_messages_than_openais_limit_are_refused_before_they_are_built(demo, path):
    """2048 messages, as OpenAI's API: 400,000 empty messages (13 MB, no content to count against
    the prompt limit) cost 570 MB and seconds of the event loop as validated models."""
    from service.schemas_openai import MAX_MESSAGES
    assert MAX_MESSAGES == 2048
    body = {"model": "lfm2", "messages": [{"role": "user", "content": ""}] * (MAX_MESSAGES + 1), "max_tokens": 1}
    r = demo.post(path, json=body if path != "/tokenize" else {k: v for k, v in body.items() if k != "max_tokens"})
    assert r.status_code == 400 and "at most 2048 messages (as OpenAI's API), got 2049" in r.text, r.text[:300]
    if path == "/tokenize":   # the limit itself is taken (a chat this long is past the model's length)
        r = demo.post(path, json={"model": "lfm2", "messages": [{"role": "user", "content": ""}] * MAX_MESSAGES})
        assert r.status_code == 200 and r.json()["count"] > 2 * MAX_MESSAGES, r.text[:300]
