"""README.md stays true: it starts with the two commands and lists every variable every part reads."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _config_table_module():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("config_table", ROOT / "tools" / "config_table.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_starts_with_the_two_commands() -> None:
    text = (ROOT / "README.md").read_text()
    first_block = text.split("```")[1]
    assert "make run" in first_block and "make test" in first_block


def test_readme_documents_every_environment_variable() -> None:
    from crm_platform.config import env_var_names

    text = (ROOT / "README.md").read_text()
    missing = [
        f"{part}: {name}"
        for part, cls in _config_table_module().settings_classes()
        for name in env_var_names(cls)
        if f"`{name}`" not in text
    ]
    assert not missing, f"README.md lacks {missing}; run python tools/config_table.py"
