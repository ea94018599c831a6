"""The README's Python example runs as written."""

import pathlib
import re


def test_readme_example_runs():
    readme = (pathlib.Path(__file__).resolve().parents[2] / "README.md").read_text()
    blocks = [b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if "not run by the README test" not in b]
    assert blocks
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})
