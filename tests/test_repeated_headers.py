"""Headers sent twice where two readers could take different ones. --api-key with two
Authorization values: refused on REST and gRPC, whichever comes first (a proxy in front may
check the first, this server read the last). Two Content-Type (or -Encoding, -Length) headers:
a 400 (the guard counted JSON values by the last, multipart: none; the routes parsed the first,
JSON: 15.6 GiB and 152 s for one 32 MiB body)."""
import httpx
import pytest

gc = pytest.importorskip("tritonclient.grpc")

from tests.grpc_fake_server import grpc_server  # noqa: E402

BODY = {"inputs": [{"name": "input_ids", "shape": [1, 1], "datatype": "INT64", "data": [1]}]}


@pytest.fixture(scope="module")
def guarded():
    with grpc_server(api_key="s3cret") as s:
        yield s


@pytest.mark.parametrize("values", [["Bearer s3cret", "Bearer nope"], ["Bearer nope", "Bearer s3cret"],
                                    ["Bearer s3cret", "Bearer s3cret"]])
def test_two_authorization_headers_are_refused(guarded, values):
    _, url, _ = guarded
    r = httpx.post(f"{url}/v2/models/lfm2/infer", json=BODY, headers=[("authorization", v) for v in values])
    assert r.status_code == 401 and "send one 'Authorization: Bearer" in r.json()["error"]
    assert httpx.post(f"{url}/v2/models/lfm2/infer", json=BODY,
                      headers={"authorization": "Bearer s3cret"}).status_code == 200


def test_two_authorization_metadata_entries_are_refused(guarded):
    """tritonclient takes headers as a dict (one value a name): the generated stub sends two."""
    import grpc
    from tritonclient.grpc import service_pb2 as pb, service_pb2_grpc as pbg

    target, _, _ = guarded
    request = pb.ModelInferRequest(model_name="lfm2")
    tensor = request.inputs.add(name="input_ids", datatype="INT64", shape=[1, 1])
    tensor.contents.int64_contents.append(1)
    with grpc.insecure_channel(target) as channel:
        stub = pbg.GRPCInferenceServiceStub(channel)
        for values in (["Bearer s3cret", "Bearer nope"], ["Bearer nope", "Bearer s3cret"]):
            with pytest.raises(grpc.RpcError) as err:
                stub.ModelInfer(request, metadata=[("authorization", v) for v in values], timeout=10)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED and "send one metadata entry" in err.value.details()
        assert stub.ModelInfer(request, metadata=[("authorization", "Bearer s3cret")], timeout=10).outputs[0].name == "logits"


@pytest.mark.parametrize("types", [["application/json", "multipart/form-data; boundary=x"],
                                   ["multipart/form-data; boundary=x", "application/json"]])
def test_two_content_type_headers_are_a_400(guarded, types):
    _, url, _ = guarded
    headers = [("content-type", t) for t in types] + [("authorization", "Bearer s3cret")]
    for path in ("/v1/generate", "/v2/models/lfm2/infer"):
        r = httpx.post(url + path, content=b'{"prompt": "a"}', headers=headers)
        assert r.status_code == 400 and "request header content-type sent more than once" in r.json()["error"], r.text

