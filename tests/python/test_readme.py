"""The README's Python example runs as written (paths taken from the repository root)."""

import re

from conftest import REPO


def test_readme_example_runs(tmp_path, monkeypatch, capsys):
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Python"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert len(code.strip().splitlines()) <= 12
    code = re.sub(r'"((?:tests|examples)/[^"]+)"', lambda m: repr(f"{REPO}/{m.group(1)}"), code)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "liver" in out and "(1, 3, 64, 64, 64)" in out
    assert (tmp_path / "labels.nii.gz").stat().st_size > 0
