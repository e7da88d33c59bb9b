"""Triton's classification extension (service/classification.py) on both protocols.

tritonclient's `InferRequestedOutput(name, class_count=k)` asks for the k highest values of an
output as BYTES "<value>:<index>[:<label>]". Checked against the plain output of the same
request sorted independently here, with tritonclient's own BYTES decoding, over REST (JSON and
binary) and gRPC, with and without class labels; bad counts are a 400 / INVALID_ARGUMENT.
"""
import numpy as np
import pytest

grpcclient = pytest.importorskip("tritonclient.grpc")
httpclient = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException, deserialize_bytes_tensor  # noqa: E402

from service.classification import class_count, serialize_bytes, top_classes  # noqa: E402
from tests.grpc_fake_server import grpc_server  # noqa: E402
from error_bodies import error_message


def expected(scores: np.ndarray, k: int, labels=None) -> list[list[str]]:
    """Written out: for each row, the indices by value descending (ties by index)."""
    rows = []
    for row in scores:
        order = sorted(range(len(row)), key=lambda i: (-float(row[i]), i))[:k]
        rows.append([f"{float(row[i]):f}:{i}" + (f":{labels[i]}" if labels else "") for i in order])
    return rows


def decoded(arr: np.ndarray) -> list[list[str]]:
    """tritonclient gives bytes from binary and gRPC outputs, str from JSON ones."""
    return [[x.decode() if isinstance(x, bytes) else x for x in row] for row in arr]


def test_top_classes_against_a_written_out_sort():
    rng = np.random.default_rng(0)
    scores = rng.standard_normal((3, 17)).astype(np.float32)
    scores[1, 4] = scores[1, 9] = scores[1].max() + 1          # a tie at the top: lower index first
    assert decoded(top_classes(scores, 5)) == expected(scores, 5)
    assert decoded(top_classes(scores, 5))[1][:2] == [f"{scores[1, 4]:f}:4", f"{scores[1, 9]:f}:9"]
    labels = [f"name {i}" for i in range(17)]
    assert decoded(top_classes(scores, 2, labels)) == expected(scores, 2, labels)
    assert top_classes(scores, 40).shape == (3, 17)             # more than there are: all of them


def test_a_blank_label_is_left_out_as_triton_does():
    """A blank line of the labels file: Triton writes "<value>:<index>", not "<value>:<index>:"."""
    arr = top_classes(np.array([[3.0, 2.0, 1.0]], dtype=np.float32), 3, ["a", "", "c"])
    assert decoded(arr) == [["3.000000:0:a", "2.000000:1", "1.000000:2:c"]]


def test_bytes_on_the_wire_decode_with_tritonclient():
    arr = top_classes(np.array([[0.5, -1.0, 2.25]], dtype=np.float32), 3, ["a", "b", "ünï"])
    back = deserialize_bytes_tensor(serialize_bytes(arr))
    assert [x.decode() for x in back] == ["2.250000:2:ünï", "0.500000:0:a", "-1.000000:1:b"]


@pytest.mark.parametrize("bad", [0, -2, 1.5, True, "3"])
def test_class_count_must_be_a_positive_integer(bad):
    with pytest.raises(ValueError, match="classification must be an integer >= 1"):
        class_count("logits", {"classification": bad})
    assert class_count("logits", {}) is None


@pytest.fixture(scope="module")
def served():
    with grpc_server() as s:
        yield s


def _image(seed):
    return np.random.default_rng(seed).standard_normal((2, 3, 224, 224)).astype(np.float32)


@pytest.mark.parametrize("binary", [pytest.param(True, id="binary"), pytest.param(False, id="json")])
def test_rest_returns_the_top_classes_of_the_plain_output(served, binary):
    _, url, _ = served
    client = httpclient.InferenceServerClient(url.removeprefix("http://"))
    x = httpclient.InferInput("input", [2, 3, 224, 224], "FP32")
    x.set_data_from_numpy(_image(1), binary_data=binary)
    plain = client.infer("mobilenet_v2", [x]).as_numpy("logits")
    out = client.infer("mobilenet_v2", [x], outputs=[
        httpclient.InferRequestedOutput("logits", binary_data=binary, class_count=4)])
    classes = out.as_numpy("logits")
    assert out.get_output("logits")["datatype"] == "BYTES" and classes.shape == (2, 4)
    assert decoded(classes) == expected(plain, 4)
    assert "classification" in client.get_server_metadata()["extensions"]


def test_grpc_returns_the_top_classes_with_labels(served):
    target, _, models = served
    labels = [f"class {i}" for i in range(models["mobilenet_v2"].outputs[0].shape[-1])]
    models["mobilenet_v2"].output_labels = {"logits": labels}
    try:
        client = grpcclient.InferenceServerClient(target)
        x = grpcclient.InferInput("input", [2, 3, 224, 224], "FP32")
        x.set_data_from_numpy(_image(2))
        plain = client.infer("mobilenet_v2", [x]).as_numpy("logits")
        out = client.infer("mobilenet_v2", [x], outputs=[grpcclient.InferRequestedOutput("logits", class_count=3)])
        assert decoded(out.as_numpy("logits")) == expected(plain, 3, labels)
    finally:
        models["mobilenet_v2"].output_labels = {}


def test_a_bad_count_is_refused_on_both_protocols(served):
    target, url, _ = served
    import httpx
    body = {"inputs": [{"name": "input_ids", "datatype": "INT64", "shape": [1, 2], "data": [1, 2]}],
            "outputs": [{"name": "logits", "parameters": {"classification": 0}}]}
    r = httpx.post(f"{url}/v2/models/lfm2/infer", json=body)
    assert r.status_code == 400 and "classification must be an integer >= 1" in error_message(r)
    client = grpcclient.InferenceServerClient(target)
    x = grpcclient.InferInput("input_ids", [1, 2], "INT64")
    x.set_data_from_numpy(np.array([[1, 2]], dtype=np.int64))
    wanted = grpcclient.InferRequestedOutput("logits", class_count=3)
    wanted._output.parameters["classification"].int64_param = -1
    with pytest.raises(InferenceServerException, match="classification must be an integer"):
        client.infer("lfm2", [x], outputs=[wanted])


def test_mobilenet_given_a_labels_file_labels_its_classes(tmp_path):
    """Labels only when the model was given them (Triton's label_filename): the default class_<i>
    names are /v1/classify's fallback, not labels the model has."""
    from models.registry import build_model
    path = tmp_path / "labels.txt"
    path.write_text("".join(f"thing {i}\n" for i in range(1000)))
    assert build_model("mobilenet_v2", labels=path).output_labels == {"logits": [f"thing {i}" for i in range(1000)]}
    assert build_model("mobilenet_v2").output_labels == {}
