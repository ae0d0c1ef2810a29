"""Print the configuration table of every part (Markdown), from the settings classes themselves.

``python tools/config_table.py`` — paste into README.md; a test checks the README lists every variable.
"""

from __future__ import annotations

import importlib

from crm_platform.config import CommonSettings, describe

PARTS = [
    ("gateway", "crm_gateway.config"),
    ("customer", "crm_customer.config"),
    ("interaction", "crm_interaction.config"),
    ("opportunity", "crm_opportunity.config"),
    ("service-ticket", "crm_ticket.config"),
    ("notification", "crm_notification.config"),
    ("reporting", "crm_reporting.config"),
]


def settings_classes() -> list[tuple[str, type]]:
    """(part, Settings class) of every deployable."""
    return [(part, importlib.import_module(module).Settings) for part, module in PARTS]


def main() -> None:
    """Print one table of the common variables and one row group per part."""
    common = {row[0] for row in describe(CommonSettings)}
    print("| Variable | Part | Default | Meaning |\n|---|---|---|---|")
    for name, default, doc, secret in describe(CommonSettings):
        print(f"| `{name}` | all | {'(secret)' if secret else f'`{default}`' if default else ''} | {doc} |")
    for part, cls in settings_classes():
        for name, default, doc, secret in describe(cls):
            if name not in common:
                print(f"| `{name}` | {part} | {'(secret)' if secret else f'`{default}`' if default else ''} | {doc} |")


if __name__ == "__main__":
    main()
