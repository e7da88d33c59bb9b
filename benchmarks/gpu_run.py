"""What one benchmarks/gpu.py run shares: `Run` (device, settings, budget, environment, tag,
results so far, and every file it writes under --out, never the committed CPU results) and
`Interrupted`, which SIGTERM raises so the run still writes its summary.

Imported by gpu.py on the device's python: torch and benchmarks/ only (no service/, no
fastapi/pydantic/orjson)."""
from __future__ import annotations

import json
from pathlib import Path

from benchmarks.gpu_config import Budget, environment, run_tag, settings

PROTECTED = ("ops-cpu.", "models-cpu.", "serve-cpu.")           # committed CPU results


class Interrupted(BaseException):
    """SIGTERM (from `timeout`): stop measuring, still write the summary."""



class Run:
    """Everything one run shares: device, settings, output names, results so far."""

    def __init__(self, args, argv, steps):
        self.device, self.smoke, self.out = args.device, args.smoke, Path(args.out)
        self.cfg = settings(self.device, self.smoke)
        self.budget = Budget(self.cfg["budgets"], self.cfg["total_s"], steps, args.budget_scale)
        self.env = environment(self.device, argv)
        gpu = (self.env.get("gpu") or "") + " " + ((self.env.get("nvidia_smi") or {}).get("name") or "")
        self.tag = args.tag or run_tag(self.device, self.smoke, gpu)
        self.files, self.ops, self.copy, self.correctness, self.decode, self.models = [], {}, None, None, [], None
        self.layouts = None
        self.prewarm, self.built_models = None, None
        self.t0 = self.budget.t0

    def path(self, name: str) -> Path:
        if name.startswith(PROTECTED):
            raise RuntimeError(f"refusing to write {name}: committed CPU results; pass another --tag")
        self.out.mkdir(parents=True, exist_ok=True)
        self.files.append(name)
        return self.out / name

    def write_json(self, name: str, obj) -> None:
        self.path(name).write_text(json.dumps(obj, indent=1, default=str) + "\n")

    def write_rows(self, stem: str, title: str, doc: str, rows: list, skipped: list, table: list[str]) -> None:
        """<stem>-<tag>.json (environment, rows, skipped, doc) and .md (title, doc, table)."""
        self.write_json(f"{stem}-{self.tag}.json", {"environment": self.env, "rows": rows, "skipped": skipped,
                                                    "doc": doc})
        self.path(f"{stem}-{self.tag}.md").write_text(
            f"# {title} ({self.env['device_name']})\n\n{doc}\n" + "\n".join(table) + "\n")
