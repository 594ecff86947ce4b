"""Unit tests of the work-tree check in `tests/conftest.py` (which fails a session whose
tests wrote inside the checkout), on throwaway git repositories."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, worktree_changes, worktree_status

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")


def git(root: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=test", "-c", "user.email=test@example.invalid", *args],
        cwd=root, check=True, capture_output=True,
    )


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q")
    (root / ".gitignore").write_text("ignored/\n")
    (root / "tracked.txt").write_text("one\n")
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "start")
    return root


def changes(root: Path, before: frozenset[str]) -> list[str]:
    after = worktree_status(root)
    assert after is not None
    return worktree_changes(before, after)


def test_a_clean_checkout_has_no_status(repo: Path) -> None:
    assert worktree_status(repo) == frozenset()


def test_a_new_file_is_reported_even_in_a_new_directory(repo: Path) -> None:
    before = worktree_status(repo)
    assert before is not None
    (repo / "hi").write_text("call_1 attempt 1\n")
    (repo / "deep" / "er").mkdir(parents=True)
    (repo / "deep" / "er" / "file").write_text("x")
    assert changes(repo, before) == ["?? deep/er/file", "?? hi"]


def test_modified_and_deleted_tracked_files_are_reported(repo: Path) -> None:
    (repo / "other.txt").write_text("two\n")
    git(repo, "add", "other.txt")
    git(repo, "commit", "-q", "-m", "other")
    before = worktree_status(repo)
    assert before is not None
    (repo / "tracked.txt").write_text("changed\n")
    (repo / "other.txt").unlink()
    assert changes(repo, before) == [" D other.txt", " M tracked.txt"]


def test_what_was_there_before_and_ignored_files_are_not_reported(repo: Path) -> None:
    (repo / "untracked-before").write_text("mine\n")
    (repo / "tracked.txt").write_text("edited before the session\n")
    before = worktree_status(repo)
    assert before is not None
    (repo / "tracked.txt").write_text("edited again\n")  # still " M": someone's edit, not new
    (repo / "ignored").mkdir()
    (repo / "ignored" / "cache").write_text("x")
    (repo / "untracked-before").unlink()  # gone: not a test's doing
    assert changes(repo, before) == []


def test_only_the_tree_under_the_root_is_looked_at(repo: Path) -> None:
    project = repo / "project"
    project.mkdir()
    before = worktree_status(project)
    assert before is not None
    (repo / "beside-the-project").write_text("x")
    (project / "inside").write_text("x")
    assert changes(project, before) == ["?? project/inside"]


def test_outside_a_checkout_there_is_nothing_to_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    # Git must not find a checkout above the temp directory, wherever that lives.
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    inside = subprocess.run(["git", "rev-parse", "--is-inside-work-tree"], cwd=plain, capture_output=True, check=False)
    assert inside.returncode != 0
    assert worktree_status(plain) is None


def test_the_session_checks_this_repository() -> None:
    assert (REPO_ROOT / "pyproject.toml").is_file()
    assert (REPO_ROOT / "tests" / "conftest.py").is_file()
