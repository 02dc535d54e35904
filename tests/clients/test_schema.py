"""docs/openapi.yaml against a running tradsys, with schemathesis: it
generates requests for every operation the document describes (a bounded
number, from a fixed seed) and checks that no answer is a server error
(5xx) and that every answer - status, content type, headers and body - is
one the document allows. The API port and the admin port are each run
with their own operations.

The server is the test's own, with the IP bans and rate limits out of the
way, so that the generated requests reach the endpoints instead of the
ban (418 and 429 are in the document all the same)."""

import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

from conftest import MARKETS, ROOT, START_TIMEOUT_S, _read_lines, tradsys_binary

CHECKS = ",".join([
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
])
EXAMPLES_PER_OPERATION = 20
SEED = 1
SCHEMATHESIS_TIMEOUT_S = 600


def start(data_dir, token):
    process = subprocess.Popen(
        [
            tradsys_binary(), "serve",
            "--listen", "127.0.0.1:0",
            "--admin-listen", "127.0.0.1:0",
            "--admin-token", token,
            "--shards", "2",
            "--data-dir", str(data_dir),
            "--markets", str(MARKETS),
            "--demo-user", "false",
            "--ip-ban-auth-failures-per-minute-max", "100000000",
            "--ip-ban-refusals-per-minute-max", "100000000",
            "--request-weight-per-minute-max", "100000000",
            "--raw-requests-per-5m-max", "100000000",
            # Shedding is tested in tests/overload.rs; here a busy machine would
            # shed the very requests under test.
            "--overload-order-wait-ms-max", "0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    lines = queue.Queue()
    threading.Thread(target=_read_lines, args=(process.stdout, lines), daemon=True).start()
    api, admin = None, None
    deadline = time.monotonic() + START_TIMEOUT_S
    while api is None or admin is None:
        line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        assert line is not None, "tradsys stopped during start-up"
        words = line.split()
        if len(words) == 6 and words[0] == "shard" and words[4] == "listening":
            api = "http://" + words[5]
        elif len(words) == 3 and words[:2] == ["admin", "listening"]:
            admin = "http://" + words[2]
    return process, api, admin


def test_every_answer_is_documented_and_none_is_a_server_error(tmp_path):
    token = "schema-" + os.urandom(12).hex()
    process, api, admin = start(tmp_path / "data", token)
    schemathesis = Path(sys.executable).parent / "schemathesis"
    runs = [
        (api, ["--exclude-path-regex", "^/admin/"]),
        (admin, ["--include-path-regex", "^/admin/", "-H", f"X-Admin-Token: {token}"]),
    ]
    try:
        for url, selection in runs:
            run = subprocess.run(
                [
                    str(schemathesis), "run", str(ROOT / "docs" / "openapi.yaml"),
                    "--url", url, *selection,
                    "--max-examples", str(EXAMPLES_PER_OPERATION),
                    "--seed", str(SEED),
                    "--checks", CHECKS,
                ],
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=SCHEMATHESIS_TIMEOUT_S,
            )
            assert run.returncode == 0, f"schemathesis against {url}:\n{run.stdout[-8000:]}{run.stderr[-2000:]}"
            assert " generated, " in run.stdout and " passed" in run.stdout, run.stdout[-4000:]
    finally:
        process.terminate()
        try:
            code = process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            code = None
    assert code == 0, f"tradsys exited {code} on SIGTERM (a panic stops a shard)"

