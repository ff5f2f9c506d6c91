"""The running bot's catalog: broken files are reported and their apps left
out, never fatal; the owner's `limit` words."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bot.catalog import SettingError, limits_from_words, scan_catalog

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def test_a_broken_file_leaves_only_its_app_out(tmp_path: Path) -> None:
    shutil.copy(FIXTURES / "catalog-bad" / "privileged.yaml", tmp_path / "privileged.yaml")
    catalog, problems = scan_catalog([FIXTURES / "catalog", tmp_path])
    assert "privileged" not in catalog and "pair" in catalog and "solo" in catalog
    assert len(problems) == 1 and "privileged containers are refused" in str(problems[0])


def test_a_broken_override_does_not_fall_back_to_the_shipped_entry(tmp_path: Path) -> None:
    (tmp_path / "solo.yaml").write_text("name: solo\ndescription: broken\nservices: {}\n")
    catalog, problems = scan_catalog([FIXTURES / "catalog", tmp_path])
    assert "solo" not in catalog and "pair" in catalog
    assert problems and problems[0].file == str(tmp_path / "solo.yaml")


def test_a_missing_folder_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    catalog, problems = scan_catalog([FIXTURES / "catalog", tmp_path / "nope"])
    assert "pair" in catalog and [str(p) for p in problems] == [f"{tmp_path / 'nope'}: catalog folder not found"]


def test_limit_words() -> None:
    assert limits_from_words({"memory": "512m", "cpus": "0.5", "pids": "200"}).memory == 512 * 1024**2
    assert limits_from_words({"cpus": "2"}).cpus == 2.0
    for words, reason in (({"memory": "1k"}, "below Docker's minimum"), ({"cpus": "many"}, "not a number"),
                          ({"pids": "0"}, "out of range"), ({"swap": "1g"}, "not a limit")):
        with pytest.raises(SettingError, match=reason):
            limits_from_words(words)
