"""The README's shown output stays true: every line of its output examples has the shape of a
line the same commands print today (numbers, paths, job ids and hashes masked). The demo is run
on the tiny model (same commands, same kinds of lines; the MiniLM demo itself takes minutes)."""

import re
import subprocess
import sys

import pytest

from conftest import REPO, tiny_raw, write_toml
from test_compare import _cube

README = (REPO / "README.md").read_text()


def shape(line: str) -> str:
    """A line with what varies between runs masked: paths, hashes, numbers."""
    line = re.sub(r"--cluster \S+", "--cluster PROFILE", line)
    line = line.replace("*** STEP ", "*** JOB ")  # SLURM logs both; which comes last varies
    line = re.sub(r"\S*/\S*", "PATH", line)
    line = re.sub(r"\b[0-9a-f]{12}\b", "HASH", line)
    line = re.sub(r"[-+]?\d+(\.\d+)?(e[-+]?\d+)?", "N", line)
    return " ".join(line.split())


def output_blocks() -> list[list[str]]:
    """The README's fenced blocks without a language (```sh and ```python are commands)."""
    blocks, current, fence = [], None, ""
    for line in README.splitlines():
        if not line.startswith("```"):
            if current is not None:
                current.append(line)
        elif current is None:
            current, fence = [], line
        else:
            if fence == "```":
                blocks.append(current)
            current = None
    return blocks


def example(first_words: str) -> list[str]:
    """The README's output block whose first line starts with ``first_words`` (without "...")."""
    for lines in output_blocks():
        if lines and lines[0].startswith(first_words):
            return [ln for ln in lines if ln.strip() and ln.strip() != "..."]
    raise AssertionError(f"the README has no output example starting {first_words!r}")


def assert_shapes(shown: list[str], printed: str) -> None:
    printed_shapes = {shape(line) for line in printed.splitlines()}
    missing = [line for line in shown if shape(line) not in printed_shapes]
    assert not missing, ("README lines that no longer match the output:\n" + "\n".join(missing)
                         + "\n--- output:\n" + printed)


def _seedgrid(cwd, *args, ok=(0,)):
    result = subprocess.run([sys.executable, "-m", "seedgrid", *args], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            timeout=900)
    assert result.returncode in ok, result.stdout
    return result.stdout


def test_the_demo_example_has_the_shape_of_the_demo_commands(tmp_path):
    config = write_toml(tmp_path / "demo.toml", tiny_raw())
    printed = _seedgrid(tmp_path, "submit", "--config", str(config), "--cluster", "local",
                        "--out", "runs/demo", "--wait")
    printed += _seedgrid(tmp_path, "collect", "runs/demo")
    printed += _seedgrid(tmp_path, "report", "runs/demo", "--samples", "500")
    assert_shapes(example("submitted "), printed)
    # the figures the README shows are the demo report's own: each a PNG the same command draws
    shown = re.findall(r"!\[[^]]+\]\(docs/img/demo-([\w]+)\.png\)", README)
    assert shown == ["fig1_expected_max", "consistency"]
    for name in shown:
        assert (REPO / f"docs/img/demo-{name}.png").read_bytes().startswith(b"\x89PNG")
        assert (tmp_path / f"runs/demo/report/demo/{name}.png").exists(), name


def test_the_compare_example_has_the_shape_of_compare(tmp_path):
    # the README's example: synthetic 4 x 4 cubes, B with 30 examples made right in every run
    _cube(tmp_path / "runs/a", 0.7, seed=0)
    _cube(tmp_path / "runs/b", 0.7, seed=0, better=30)
    printed = _seedgrid(tmp_path, "compare", "runs/a", "runs/b", ok=(1,))
    assert_shapes(example("accuracy (end) on mr"), printed)


def test_the_readme_names_only_what_exists():
    # (cluster/ is the user's own folder of site profiles: not in the repository)
    for path in re.findall(r"`((?:seedgrid|slurm|analysis|benchmarks|tests|constraints)"
                           r"/[\w./-]+\.(?:py|sh|toml|txt))`", README):
        assert (REPO / path).exists(), path
    offline = (REPO / "constraints/offline.txt").read_text()
    for section in re.findall(r'README, "([^"]+)"', offline.replace("\n# ", " ")):
        assert f"## {section}" in README, section


@pytest.mark.parametrize("preset", ["demo"])
def test_the_demo_preset_says_what_it_does(preset):
    from seedgrid.config import load_config

    cfg = load_config(preset)
    text = (REPO / f"seedgrid/presets/{preset}.toml").read_text()
    during = cfg.train.epochs * cfg.train.evals_per_epoch
    assert f"{during} times during it" in text and f"({during + 1} evaluations)" in text
    assert f"on {cfg.task.validation_size} held-out" in text
    assert f"{cfg.task.train_size} movie-review sentences" in text
