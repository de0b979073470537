"""Schemathesis fuzzes the live API from its own /openapi.json: no 500s, every answer as documented.

It sends generated requests (bad bodies, odd unicode, garbage uploads, stateful sequences) to a real uvicorn
server with real workers and Redis, with and without a valid API key.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

CHECKS = "not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance"


@pytest.mark.parametrize("with_key", [True, False])
def test_fuzzing_finds_no_server_errors_and_no_undocumented_answers(stack, with_key: bool) -> None:  # type: ignore[no-untyped-def]
    st = Path(sys.executable).with_name("st")
    argv = [str(st), "run", f"{stack.url}/openapi.json", "-c", CHECKS, "-n", "25",
            "--request-timeout", "20", "--seed", "20261127"]
    if with_key:
        argv += ["-H", f"Authorization: Bearer {stack.keys[0]}"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=400)
    tail = "\n".join(done.stdout.splitlines()[-40:])
    assert done.returncode == 0, tail
    assert " passed" in tail
