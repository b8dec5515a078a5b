"""Every operation of the served OpenAPI document, driven by schemathesis against a live
gateway (real Redis, SQLite, the durable log) with generated valid and invalid inputs.

It fails on any 5xx and on any response that breaks its documented schema (status code,
content type, body). Bounded: ``LC_API_FUZZ_EXAMPLES`` examples per operation (default 12)
and ``LC_API_FUZZ_SECONDS`` of fuzzing at most over both roles (default 60), so CI stays under 3 minutes.
Ops and viewer tokens both run: a viewer meets the 401/403 paths, ops reach the handlers.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

EXAMPLES = int(os.environ.get("LC_API_FUZZ_EXAMPLES", "12"))
SECONDS = int(os.environ.get("LC_API_FUZZ_SECONDS", "60"))
CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"


def _schemathesis() -> list[str]:
    exe = shutil.which("schemathesis") or str(Path(sys.executable).with_name("schemathesis"))
    if not Path(exe).exists():
        pytest.fail("schemathesis is not installed: pip install -e '.[dev]'")
    return [exe]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("role", ["ops", "viewer"])
async def test_every_operation_answers_per_its_schema_for_generated_inputs(gateway_factory: Any, token: Any, tmp_path: Path,
                                                                          role: str) -> None:
    node = await gateway_factory(test_coins=True)
    tok = token("fuzz-ops", "ops") if role == "ops" else token("fuzz-viewer", "viewer")
    cmd = [
        *_schemathesis(), "run", f"{node.url}/api/v1/openapi.json", "--url", node.url,
        "--checks", CHECKS, "--max-examples", str(EXAMPLES), "--max-time", str(SECONDS // 2),
        "--header", f"Authorization: Bearer {tok}", "--seed", "20261204", "--workers", "1",
        "--request-timeout", "10", "--no-shrink", "--warnings", "off",
        "--exclude-path", "/api/v1/docs", "--exclude-path", "/metrics",
    ]
    proc = await asyncio.create_subprocess_exec(*cmd, cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
                                                env={**os.environ, "NO_COLOR": "1", "SCHEMATHESIS_HOOKS": ""})
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=SECONDS * 2 + 60)
    text = out.decode(errors="replace")
    assert proc.returncode == 0, text[-12000:]
