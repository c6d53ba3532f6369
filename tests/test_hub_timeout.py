"""A Hugging Face Hub endpoint that accepts connections and never answers: from_pretrained fails
within the metadata timeout (HF_HUB_ETAG_TIMEOUT) with an error naming the repo id and the timeout;
it used to wait forever (snapshot_download's first request has no timeout). The endpoint is a TCP
server on 127.0.0.1 in this process; the download runs in a fresh process pointed at it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import ltxengine

REPO_ROOT = Path(ltxengine.__file__).resolve().parent.parent


def _silent_server(stop: threading.Event, lifetime: float) -> tuple[int, threading.Thread]:
    """Listen on a free loopback port, accept every connection and never answer; stops at
    ``stop`` or after ``lifetime`` seconds, whichever comes first, closing everything."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    sock.settimeout(0.2)
    deadline = time.monotonic() + lifetime

    def serve():
        held = []
        try:
            while not stop.is_set() and time.monotonic() < deadline:
                try:
                    held.append(sock.accept()[0])
                except socket.timeout:
                    pass
        finally:
            for conn in held:
                conn.close()
            sock.close()
    thread = threading.Thread(target=serve, name="silent-hub", daemon=True)
    thread.start()
    return sock.getsockname()[1], thread


def _run_against_silent_hub(tmp_path, code: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh process whose Hub endpoint never answers (2 s metadata timeout,
    its own empty-or-prepared cache under tmp_path/hf-home); prints how long it waited."""
    stop = threading.Event()
    port, server = _silent_server(stop, lifetime=120)
    env = {k: v for k, v in os.environ.items()
           if k.upper() not in ("HF_HUB_OFFLINE", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")}
    env.update(HF_ENDPOINT=f"http://127.0.0.1:{port}", HF_HUB_ETAG_TIMEOUT="2", HF_HOME=str(tmp_path / "hf-home"),
               HF_HUB_DISABLE_TELEMETRY="1", NO_PROXY="127.0.0.1", no_proxy="127.0.0.1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])))
    timed = (f"import time\nt = time.monotonic()\ntry:\n    {code}\n"
             f"finally:\n    print(f'waited {{time.monotonic() - t:.1f}} s')\n")
    try:
        return subprocess.run([sys.executable, "-c", "import ltxengine.loading.sources\n" + timed], env=env, cwd=tmp_path,
                              capture_output=True, text=True,
                              timeout=90)  # the old code never returns: this fails the test instead of hanging
    finally:
        stop.set()
        server.join(timeout=5)
        assert not server.is_alive()


def _waited(proc) -> float:
    return float(proc.stdout.split("waited ")[1].split(" s")[0])


def test_a_hub_that_never_answers_fails_within_the_timeout(tmp_path):
    proc = _run_against_silent_hub(tmp_path, "ltxengine.Engine.from_pretrained('owner/silent-repo', device='cpu')")
    assert proc.returncode != 0
    err = proc.stderr[-3000:]
    assert "TimeoutError: path_or_repo_id: the Hugging Face Hub (http://127.0.0.1:" in err, err
    assert "did not answer for 'owner/silent-repo' within 2 s (HF_HUB_ETAG_TIMEOUT)" in err, err
    assert _waited(proc) < 30, proc.stdout  # the 2 s probe (and no retries), not snapshot_download's endless wait


def test_a_cached_snapshot_still_serves_when_the_hub_never_answers(tmp_path):
    """As snapshot_download does when offline: the probe's failure falls back to the cache."""
    sha = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hf-home" / "hub" / "models--owner--cached-repo"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(sha)
    snapshot = repo / "snapshots" / sha
    snapshot.mkdir(parents=True)
    (snapshot / "model_index.json").write_text("{}")
    proc = _run_against_silent_hub(tmp_path, "print('resolved', ltxengine.loading.sources.resolve_source("
                                             "'owner/cached-repo', None, False))")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"resolved {snapshot}" in proc.stdout and _waited(proc) < 30, proc.stdout
