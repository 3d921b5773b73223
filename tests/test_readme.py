"""The README's and docs/' shown output stays true: every line of their output examples has the
shape of a line the same commands print today (numbers, paths, job ids and hashes masked), and
every output example is one a test runs. The demo is run on the tiny model (same commands, same
kinds of lines; the MiniLM demo itself takes minutes)."""

import re
import subprocess
import sys

import pytest

from conftest import REPO, tiny_raw, write_toml
from test_compare import _cube

README = (REPO / "README.md").read_text()
PAGES = {path.relative_to(REPO): path.read_text()
         for path in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]}
#: the first words of every output example of the pages, and the test that runs its commands
CHECKED = {
    "submitted ": "test_the_demo_example_has_the_shape_of_the_demo_commands",
    "demo: accuracy at the end": "test_the_demo_example_has_the_shape_of_the_demo_commands",
    "accuracy (end) on mr": "test_the_compare_example_has_the_shape_of_compare",
    "runs/tiny: config": "test_submit.py::test_cancelled_tasks_are_shown_with_why_and_resume_"
                         "reruns_only_them",
    "  early stop (given)": "test_early_stop_run.py::test_early_stop_on_slurm_continues_the_best_"
                            "bitwise",
    "t = 5.60, p = 0.0304": "test_compare.py::test_the_tutorials_worked_example_runs_as_its_page_"
                            "shows",
    "wrote runs/reviews/cube.nc": "test_own_task.py::test_the_worked_example_runs_as_its_page_"
                                  "says",
}


def shape(line: str) -> str:
    """A line with what varies between runs masked: paths, hashes, numbers."""
    line = re.sub(r"--cluster \S+", "--cluster PROFILE", line)
    line = line.replace("*** STEP ", "*** JOB ")  # SLURM logs both; which comes last varies
    line = re.sub(r"\S*/\S*", "PATH", line)
    line = re.sub(r"\b[0-9a-f]{12}\b", "HASH", line)
    line = re.sub(r"[-+]?\d+(\.\d+)?(e[-+]?\d+)?", "N", line)
    return " ".join(line.split())


def output_blocks() -> list[list[str]]:
    """The pages' fenced blocks without a language (```sh and ```python are commands)."""
    blocks, current, fence = [], None, ""
    for line in "\n".join(PAGES.values()).splitlines():
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
    """The output block whose first line starts with ``first_words`` (without "...")."""
    for lines in output_blocks():
        if lines and lines[0].startswith(first_words):
            return [ln for ln in lines if ln.strip() and ln.strip() != "..."]
    raise AssertionError(f"no page has an output example starting {first_words!r}")


def assert_shapes(shown: list[str], printed: str) -> None:
    printed_shapes = {shape(line) for line in printed.splitlines()}
    missing = [line for line in shown if shape(line) not in printed_shapes]
    assert not missing, ("shown lines that no longer match the output:\n" + "\n".join(missing)
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
    assert_shapes(example("demo: accuracy at the end"), printed)
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


def test_the_demos_numbers_are_one_on_every_page():
    """Every page that shows the demo's output shows the same run: a line of it on two pages is
    the same line, numbers and all (the shape test above masks numbers)."""
    seen: dict[tuple[str, int], set[str]] = {}
    for lines in output_blocks():
        if any(line.startswith("demo: ") for line in lines):
            shown = [line for line in lines if line.strip() and line.strip() != "..."]
            for i, line in enumerate(shown):  # (the k-th line of its shape in its block)
                k = sum(shape(other) == shape(line) for other in shown[:i])
                seen.setdefault((shape(line), k), set()).add(line)
    assert seen and all(len(lines) == 1 for lines in seen.values()), \
        [sorted(lines) for lines in seen.values() if len(lines) > 1]


def test_every_output_example_is_run_by_a_test():
    unchecked = [b[0] for b in output_blocks() if b and not b[0].startswith(tuple(CHECKED))]
    assert not unchecked, f"output examples no test runs: {unchecked}"
    for test in CHECKED.values():  # each named test exists and shows the example it names
        module, _, name = test.rpartition("::")
        source = (REPO / "tests" / (module or "test_readme.py")).read_text()
        assert f"def {name or test}(" in source, test


def test_the_readme_is_a_front_door_and_its_links_lead_somewhere():
    assert len(README.splitlines()) <= 200  # the reference lives in docs/
    for page, text in PAGES.items():
        for link in re.findall(r"\]\(((?!https?:|#)[^)#]+)", text):
            assert (REPO / page.parent / link).exists(), (page, link)


def test_the_pages_name_only_what_exists():
    # (cluster/NAME.toml in the pages is a site's own profile: not checked)
    for text in PAGES.values():
        for path in re.findall(r"`((?:seedgrid|slurm|analysis|benchmarks|tests|constraints)"
                               r"/[\w./-]+\.(?:py|sh|toml|txt))`", text):
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
