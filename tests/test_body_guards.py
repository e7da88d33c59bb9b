"""Guards a mutation run found untested in service/body.py."""
import pytest

from service.body import check_json_values
from service.errors import ServiceError


def test_exactly_the_limit_of_json_values_is_taken_one_more_is_refused():
    limit = 1024
    at = ("[" + ",".join(["0"] * limit) + "]").encode()          # limit values (limit - 1 commas)
    check_json_values(at, len(at), limit)
    over = ("[" + ",".join(["0"] * (limit + 1)) + "]").encode()
    with pytest.raises(ServiceError) as err:
        check_json_values(over, len(over), limit)
    assert err.value.status == 413


import asyncio
import gzip

from service.body import BodyBudget, BodyLease, read_body
from service.settings import Settings


def test_a_decoded_body_holds_its_decoded_size_of_the_budget():
    raw = b'{"prompt": "' + b"a" * 50_000 + b'"}'
    packed = gzip.compress(raw)
    lease = BodyLease(BodyBudget(10 * 2**20))
    queue = [{"type": "http.request", "body": packed, "more_body": False}]

    async def receive():
        return queue.pop(0)
    headers = {"content-length": str(len(packed)), "content-encoding": "gzip"}
    body = asyncio.run(read_body(receive, headers, Settings(), lease, infer=False))
    assert body == raw and lease.count == len(raw) and lease.budget.held == len(raw)
    lease.close()
    assert lease.budget.held == 0


def test_a_declared_length_that_cannot_fit_is_refused_before_a_byte_is_read():
    budget = BodyBudget(4096)
    assert budget.take(4000)                       # other requests' bodies
    lease = BodyLease(budget)

    async def receive():
        raise AssertionError("read a body the budget could not hold")
    with pytest.raises(ServiceError) as err:
        asyncio.run(read_body(receive, {"content-length": "2000"}, Settings(), lease, infer=False))
    assert err.value.status == 503 and budget.held == 4000
