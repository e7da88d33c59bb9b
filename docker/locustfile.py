"""Locust load for the compose stack: OIP v2 (KServe v2) infer on both models and /v1/generate
(continuously batched decoding: the TTFT, time-per-token and decode-batch panels), both variants.

Run by the `loadtest` service of docker/docker-compose.yml (headless, bounded --run-time), or by
hand against two local servers:
    DWSERVE_BEFORE_URL=http://127.0.0.1:8001 DWSERVE_AFTER_URL=http://127.0.0.1:8002 \
        locust -f docker/locustfile.py --headless -u 4 -r 2 --run-time 1m

Self-contained on purpose: the Locust image has no dwserve installed. Do not pass --host: it
would overwrite both users' hosts and send all the load to one variant.
Request names carry the variant ("lfm2 infer [before]"), so Locust's CSV/HTML compares them.
"""
import json
import os
import random
import struct

from locust import HttpUser, between, events, task

LFM2_TOKENS = int(os.environ.get("DWSERVE_LFM2_TOKENS", "32"))   # prompt length per request
LFM2_VOCAB = int(os.environ.get("DWSERVE_LFM2_VOCAB", "256"))    # ids drawn below this bound
# (and below the served model's vocab_size, read from its metadata at start)
GENERATE_TOKENS = int(os.environ.get("DWSERVE_GENERATE_TOKENS", "16"))  # new tokens per generate
MOBILENET_SHAPE = (1, 3, 224, 224)


def lfm2_body(rng: random.Random, vocab: int = LFM2_VOCAB) -> dict:
    """JSON infer request: input_ids INT64 [1, LFM2_TOKENS] (row-major flat data)."""
    ids = [rng.randrange(vocab) for _ in range(LFM2_TOKENS)]
    return {"inputs": [{"name": "input_ids", "datatype": "INT64", "shape": [1, LFM2_TOKENS], "data": ids}]}


def generate_body(rng: random.Random, vocab: int = LFM2_VOCAB) -> dict:
    """/v1/generate: a short random prompt, GENERATE_TOKENS greedy tokens (ignore_eos: every
    reply the same length, so before and after do the same work)."""
    ids = [rng.randrange(vocab) for _ in range(8)]
    return {"input_ids": ids, "max_new_tokens": GENERATE_TOKENS, "ignore_eos": True}


def mobilenet_binary(rng: random.Random) -> tuple[bytes, dict]:
    """Binary tensor extension: a JSON header, then the raw little-endian FP32 image.

    A JSON list of 150528 floats would make the load generator, not the model, the bottleneck.
    """
    n = 1
    for d in MOBILENET_SHAPE:
        n *= d
    raw = struct.pack(f"<{n}f", *(rng.random() for _ in range(n)))
    header = json.dumps({
        "inputs": [{"name": "input", "datatype": "FP32", "shape": list(MOBILENET_SHAPE),
                    "parameters": {"binary_data_size": len(raw)}}],
        "outputs": [{"name": "logits", "parameters": {"binary_data": False}}],
    }).encode()
    headers = {"Inference-Header-Content-Length": str(len(header)),
               "Content-Type": "application/octet-stream"}
    return header + raw, headers


@events.init.add_listener
def _even_users(environment, **_kwargs) -> None:
    """Before and After have equal weights, so Locust splits the users between them, and an odd
    count cannot split evenly: --users 3 gave after 2 users and before 1, --users 1 loaded after
    alone. Refused at start (headless: compose, the command above) instead of compared unfairly."""
    opts = environment.parsed_options
    users = getattr(opts, "num_users", None) if opts is not None else None
    if getattr(opts, "headless", False) and users is not None and users % 2:
        raise SystemExit(f"locustfile: --users {users} cannot split evenly between before and after; "
                         f"give an even number (LOADTEST_USERS={users + 1} in the compose stack)")


class _Variant(HttpUser):
    abstract = True
    variant = ""
    wait_time = between(0.05, 0.2)

    def on_start(self) -> None:
        self.rng = random.Random(hash(self.variant) ^ id(self))
        # Replies as they are: requests asks for gzip by default, and compressing LFM2's JSON
        # logits would load the servers with work that is neither model's.
        self.client.headers["Accept-Encoding"] = "identity"
        self.image, self.image_headers = mobilenet_binary(self.rng)   # one image per user
        self.vocab = LFM2_VOCAB
        # Read by status code, never `r.ok`: on a connection error (a server not up yet, a reset)
        # Locust's response re-raises it from `.ok`, which ended this user for the whole run, so
        # its variant lost a share of the load the other kept. Counted as a failure instead; the
        # user goes on with LFM2_VOCAB.
        with self.client.get("/v2/models/lfm2", name=f"lfm2 metadata [{self.variant}]",
                             catch_response=True) as r:
            if r.status_code != 200:
                r.failure(f"HTTP {r.status_code}" if r.status_code else f"no answer: {r.error!r}")
                return
            try:
                vocab = (r.json().get("parameters") or {}).get("vocab_size")
            except ValueError:
                r.failure("metadata is not JSON")
                return
            self.vocab = min(self.vocab, int(vocab)) if vocab else self.vocab

    @task(3)
    def lfm2(self) -> None:
        self.client.post("/v2/models/lfm2/infer", json=lfm2_body(self.rng, self.vocab),
                         name=f"lfm2 infer [{self.variant}]")

    @task(1)
    def generate(self) -> None:
        self.client.post("/v1/generate", json=generate_body(self.rng, self.vocab),
                         name=f"lfm2 generate [{self.variant}]")

    @task(1)
    def mobilenet_v2(self) -> None:
        self.client.post("/v2/models/mobilenet_v2/infer", data=self.image,
                         headers=self.image_headers, name=f"mobilenet_v2 infer [{self.variant}]")


class Before(_Variant):
    """DWSERVE_DEPTHWISE_IMPL=per_group."""
    host = os.environ.get("DWSERVE_BEFORE_URL", "http://dwserve-before:8000")
    variant = "before"


class After(_Variant):
    """DWSERVE_DEPTHWISE_IMPL=auto."""
    host = os.environ.get("DWSERVE_AFTER_URL", "http://dwserve-after:8000")
    variant = "after"
