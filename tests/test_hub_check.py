"""Checked before a grid goes out: a hub model id the hub does not know is refused by submit and
--dry-run in one line; where the hub cannot be asked, the id is said to be unchecked. The hub
is a stand-in HTTP server here (HF_ENDPOINT: huggingface_hub's own setting for a mirror), the
only thing not real: no hub is reachable from this machine. And a cell that failed on its input
is not advised to resume: a resume would fail the same way."""

import http.server
import json
import os
import socket
import subprocess
import sys
import threading

import pytest

from conftest import REPO, tiny_raw, write_toml

KNOWN = {"bert-base-uncased"}


class _Hub(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # /api/models/<id>: the hub's model info, or its "repository not found"
        repo = self.path.split("?")[0].removeprefix("/api/models/")
        if repo in KNOWN:
            body, code, headers = json.dumps({"id": repo, "sha": "0" * 40}), 200, {}
        else:
            body, code = json.dumps({"error": "Repository not found"}), 404
            headers = {"X-Error-Code": "RepoNotFound"}
        self.send_response(code)
        for k, v in {"Content-Type": "application/json", **headers}.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def hub():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _submit(tmp_path, model, endpoint, offline="0"):
    config = write_toml(tmp_path / "c.toml", tiny_raw(model={"name": model, "max_length": 32}))
    env = {**os.environ, "HF_ENDPOINT": endpoint, "HF_HUB_OFFLINE": offline}
    return subprocess.run([sys.executable, "-m", "seedgrid", "submit", "--config", str(config),
                           "--cluster", "local", "--out", str(tmp_path / "run"), "--dry-run"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def _closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def test_a_model_the_hub_does_not_know_is_refused_before_anything_goes_out(tmp_path, hub):
    result = _submit(tmp_path, "bert-large-uncasd", hub)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert "model 'bert-large-uncasd' is not on the hub" in lines[0]
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("where", ["known", "unreachable", "offline"])
def test_a_known_model_passes_and_an_unasked_one_is_said_unchecked(tmp_path, hub, where):
    endpoint = {"known": hub, "unreachable": _closed_port(), "offline": hub}[where]
    result = _submit(tmp_path, "bert-base-uncased" if where == "known" else "some-org/model",
                     endpoint, offline="1" if where == "offline" else "0")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("dry run: would submit")
    said = {"known": None, "unreachable": "not checked on the hub (it did not answer",
            "offline": "not checked on the hub (HF_HUB_OFFLINE is set)"}[where]
    assert ("not checked" not in result.stderr) if said is None else said in result.stderr


def test_cells_that_failed_on_their_input_are_not_advised_to_resume(tmp_path):
    """Offline the id cannot be checked, so the grid goes out, and its cells fail to load the
    model: status says to fix the input, not to resume."""
    config = write_toml(tmp_path / "c.toml", tiny_raw(model={"name": "bert-large-uncasd"},
                                                      grid={"n_wi": 1, "n_do": 1}))
    done = subprocess.run([sys.executable, "-m", "seedgrid", "submit", "--config", str(config),
                           "--cluster", "local", "--out", str(tmp_path / "run"), "--wait"],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 1, done.stdout + done.stderr
    status = subprocess.run([sys.executable, "-m", "seedgrid", "status", str(tmp_path / "run")],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert "cannot load model 'bert-large-uncasd'" in status.stdout
    assert "failed on their input" in status.stdout and "a resume would fail again" \
        in status.stdout
    assert "submit --resume" not in status.stdout
