#!/usr/bin/env python3
"""Print the README's variables table from roles/asgi_app/meta/argument_specs.yml.

`python tools/readme_variables.py --write` replaces the table between the README's markers;
tests/test_contract.py fails when the README and the specs disagree.
"""

import re
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
SPECS = REPO / "roles" / "asgi_app" / "meta" / "argument_specs.yml"
README = REPO / "README.md"
BEGIN, END = "<!-- variables:begin -->", "<!-- variables:end -->"


def table() -> str:
    options = yaml.safe_load(SPECS.read_text())["argument_specs"]["main"]["options"]
    rows = ["| Variable | Type | Default | Description |", "| --- | --- | --- | --- |"]
    for name, spec in options.items():
        if spec.get("required"):
            default = "**required**"
        else:
            value = spec.get("default")
            flow = yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()
            default = "`null`" if value is None else f"`{flow}`"
        choices = f" One of {', '.join(f'`{c}`' for c in spec['choices'])}." if spec.get("choices") else ""
        description = " ".join(spec["description"]) if isinstance(spec["description"], list) else spec["description"]
        description = re.sub(r"C\(([^)]*)\)", r"`\1`", description).replace("|", "\\|")
        rows.append(f"| `{name}` | {spec['type']} | {default} | {description}{choices} |")
    return "\n".join(rows)


def readme_with_table(text: str) -> str:
    before, rest = text.split(BEGIN, 1)
    _, after = rest.split(END, 1)
    return f"{before}{BEGIN}\n{table()}\n{END}{after}"


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        README.write_text(readme_with_table(README.read_text()))
    else:
        print(table())
