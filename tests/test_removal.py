"""seedgrid deletes, replaces or moves only files it can prove it wrote — never through a link
inside its own folders, never another user's file, never a file changed since it wrote it —
and a report killed while it moves its files in is finished by the next one. Each class is
tried with several of its members (seedgrid.files: the one rule)."""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys

import pytest

from seedgrid import folders
from seedgrid.errors import UsageError
from seedgrid.report import MANIFEST
from seedgrid.cube import collect

from conftest import REPO, run_cli, tiny_raw, write_toml
from test_cube import _run
from test_run_folder import _one_line_refusal, _tree


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _precious(tmp_path):
    """A folder of the user's that no report may touch."""
    folder = tmp_path / "precious"
    folder.mkdir()
    (folder / "thesis.tex").write_text("years of work")
    (folder / "data.csv").write_text("a,b\n1,2\n")
    return folder


def _claim(folder, entries: dict, mode=0o644):
    """A manifest in ``folder`` naming ``entries`` (name -> content digests), as a co-user or
    a stale report could leave it."""
    path = folder / MANIFEST
    path.write_text(json.dumps({"seedgrid_report_files": entries}))
    path.chmod(mode)
    return path


def _reported(tmp_path):
    run, _ = _run(tmp_path, [(1, 1), (1, 2), (2, 1), (2, 2)], n=2)
    collect(run)
    return run


@pytest.mark.parametrize("member", ["through a folder link", "a link it names",
                                    "changed since", "a manifest others can write",
                                    "leaves the folder"])
def test_a_manifest_is_a_claim_checked_never_a_list_obeyed(tmp_path, member):
    run = _reported(tmp_path)
    precious = _precious(tmp_path)
    report = run / "report"
    report.mkdir()
    thesis = (precious / "thesis.tex").read_bytes()
    if member == "through a folder link":  # RUN/report/evil -> precious, "evil/thesis.tex"
        (report / "evil").symlink_to(precious)
        _claim(report, {"evil/thesis.tex": [_sha(thesis)]})
    elif member == "a link it names":  # the link itself is not seedgrid's either
        (report / "data.csv").symlink_to(precious / "data.csv")
        _claim(report, {"data.csv": [_sha(b"a,b\n1,2\n")]})
    elif member == "changed since":  # a figure of an earlier report, edited by its user
        (report / "old_figure.png").write_text("edited by hand")
        _claim(report, {"old_figure.png": [_sha(b"what the report wrote")]})
    elif member == "a manifest others can write":  # its true digest, but anyone may write it
        shutil.copy(precious / "thesis.tex", report / "thesis.tex")
        _claim(report, {"thesis.tex": [_sha(thesis)]}, mode=0o666)
    else:
        _claim(report, {"../../precious/thesis.tex": [_sha(thesis)]})
    before, mine = _tree(precious), {k: v for k, v in _tree(report).items() if k != MANIFEST}
    result = run_cli("report", str(run), "--samples", "50")
    assert result.returncode == 0, result.stderr
    assert _tree(precious) == before
    after = _tree(report)
    assert all(after[k] == v for k, v in mine.items()), "a file it cannot prove it wrote went"
    assert (report / "report.md").is_file()
    written = json.loads((report / MANIFEST).read_text())["seedgrid_report_files"]
    assert set(written) == {k for k, v in after.items() if v != "dir"} - set(mine) - {MANIFEST}


@pytest.mark.skipif(os.getuid() != 0, reason="a second user needs root to be made")
def test_a_manifest_another_user_wrote_names_nothing_of_ours(tmp_path):
    run = _reported(tmp_path)
    paper = tmp_path / "paper"
    paper.mkdir()
    (paper / "thesis.tex").write_text("years of work")
    manifest = _claim(paper, {"thesis.tex": [_sha(b"years of work")]})
    os.chown(manifest, 65534, 65534)  # nobody: a co-user who can read our folder
    first = run_cli("report", str(run), "--out", str(paper), "--samples", "50")
    assert first.returncode == 0, first.stderr
    assert (paper / "thesis.tex").read_text() == "years of work"
    second = run_cli("report", str(run), "--out", str(paper), "--samples", "50")
    assert second.returncode == 0, second.stderr  # its own manifest now: replaced, not refused
    assert (paper / "thesis.tex").read_text() == "years of work"


_KILLED_AT_THE_THIRD_MOVE = """
import os, signal, sys
import seedgrid.files
real, moved = os.replace, [0]
def replace(*args, **kw):
    if kw.get("dst_dir_fd") is not None:  # publish's moves into the report folder
        moved[0] += 1
        if moved[0] == 3:
            os.kill(os.getpid(), signal.SIGKILL)
    return real(*args, **kw)
seedgrid.files.os.replace = replace
from seedgrid.cli import main
main(sys.argv[1:])
"""


@pytest.mark.parametrize("earlier", [False, True])
def test_a_report_killed_while_it_moves_its_files_in_is_finished_by_the_next(tmp_path, earlier):
    run = _reported(tmp_path)
    paper = tmp_path / "paper"
    paper.mkdir()
    (paper / "draft.tex").write_text("mine")
    if earlier:  # a complete report there already
        assert run_cli("report", str(run), "--out", str(paper), "--samples", "50").returncode == 0
    killed = subprocess.run([sys.executable, "-c", _KILLED_AT_THE_THIRD_MOVE, "report",
                             str(run), "--out", str(paper), "--samples", "50"], cwd=REPO,
                            capture_output=True, text=True, timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    again = run_cli("report", str(run), "--out", str(paper), "--samples", "50")
    assert again.returncode == 0, again.stderr
    written = json.loads((paper / MANIFEST).read_text())["seedgrid_report_files"]
    on_disk = {k for k, v in _tree(paper).items() if v != "dir"} - {MANIFEST}
    assert on_disk == set(written) | {"draft.tex"} and "report.md" in written
    assert (paper / "draft.tex").read_text() == "mine"
    assert all([_sha((paper / n).read_bytes())] == d for n, d in written.items())
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


@pytest.mark.parametrize("folder", ["checkpoints", "running", "shards"])
def test_a_link_planted_as_a_run_folders_own_folder_is_refused(tmp_path, folder):
    out = tmp_path / "run"
    out.mkdir()
    precious = _precious(tmp_path)
    for name in ("wi1_do1.pt", "wi1_do1.json", "wi1_do1.lock", "wi1_do1.nc"):
        (precious / name).write_text("the user's own")
    (out / folder).symlink_to(precious)
    before = _tree(precious)
    config = write_toml(tmp_path / "tiny.toml", tiny_raw())
    result = run_cli("run", "--config", str(config), "--wi", "1", "--do", "1", "--out",
                     str(out))
    _one_line_refusal(result, str(out / folder), "symbolic link", "move it away")
    assert _tree(precious) == before


def test_the_rule_in_the_library_for_each_kind_of_removal(tmp_path):
    """remove_own, set_aside and keep_aside: what they may and may not touch."""
    root = tmp_path / "run"
    (root / "real").mkdir(parents=True)
    precious = _precious(tmp_path)
    (root / "linked").symlink_to(precious)
    (root / "real" / "mine.pt").write_text("ours")
    (root / "real" / "link.pt").symlink_to(precious / "thesis.tex")
    assert folders.remove_own(root / "real" / "mine.pt", root)
    assert not folders.remove_own(root / "real" / "link.pt", root)  # a link: left
    assert not folders.remove_own(root / "linked" / "thesis.tex", root)  # under a link: left
    assert not folders.remove_own(root / "real" / "none.pt", root)  # nothing: nothing to do
    (root / "real" / "edited.png").write_text("changed")
    assert not folders.remove_own(root / "real" / "edited.png", root, [_sha(b"original")])
    assert folders.remove_own(root / "real" / "edited.png", root, [_sha(b"changed")])
    with pytest.raises(UsageError, match="symbolic link"):
        folders.set_aside(root / "linked" / "thesis.tex", root)
    (root / "real" / "bad.json").write_text("{")
    (root / "real" / "bad.json.damaged").write_text("kept from before")
    assert folders.set_aside(root / "real" / "bad.json", root).name == "bad.json.damaged.2"
    assert folders.keep_aside(root / "real" / "h.jsonl", b"x").name == "h.jsonl.damaged"
    assert folders.keep_aside(root / "real" / "h.jsonl", b"y").name == "h.jsonl.damaged.2"
    assert (root / "real" / "bad.json.damaged").read_text() == "kept from before"
    assert (root / "real" / "h.jsonl.damaged").read_text() == "x"
    assert _tree(precious) == {"thesis.tex": b"years of work", "data.csv": b"a,b\n1,2\n"}


def test_another_hosts_temporary_is_stale_by_the_file_servers_clock(tmp_path):
    """Another host's temporary is stale after a week as the file server counts time (the
    time stamp it gives a file made now), not as this host's clock does: a clock days off
    here removes nothing that is being written."""
    target = tmp_path / "cube.nc"
    live = tmp_path / ".cube.nc.otherhost.123.abc.tmp"
    live.write_text("being written")
    old = tmp_path / ".cube.nc.otherhost.456.def.tmp"
    old.write_text("left by a host that is gone")
    week = 8 * 86400
    server_now = os.stat(live).st_mtime
    os.utime(old, (server_now - week, server_now - week))
    folders.remove_stale_temporaries(target, now=server_now)  # the server's clock
    assert live.exists() and not old.exists()
    old.write_text("again")
    os.utime(old, (server_now - week, server_now - week))
    folders.remove_stale_temporaries(target)  # no time given: the server's, from a probe file
    assert live.exists() and not old.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [live.name]  # (the probe is gone)
