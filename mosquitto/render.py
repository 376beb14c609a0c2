"""Render a broker config template: ${VAR} placeholders from --set and the environment.

    python mosquitto/render.py TEMPLATE OUT [--set KEY=VALUE ...]   (OUT "-" = stdout)

Values given with --set win over the environment, which wins over the template's own
"# default KEY=VALUE" comment lines. A placeholder without a value is an error (exit 2)
naming every missing key, so a half-rendered config never reaches Mosquitto. The output
holds the broker's HTTP secret, so it is written with mode 0600 (web/secretfile.py).
"""

from __future__ import annotations

import argparse
import os
import re
import string
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

# Run by path (Ansible with the system's python3, the compose render step, bin/run): the
# repository root is not on sys.path, and web/secretfile.py is standard library only.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from web import secretfile  # noqa: E402

DEFAULT_LINE = re.compile(r"^#\s*default\s+([A-Za-z_][A-Za-z0-9_]*)=(.*)$", re.MULTILINE)


def template_defaults(template: str) -> dict[str, str]:
    return {key: value.strip() for key, value in DEFAULT_LINE.findall(template)}


def render(template: str, values: Mapping[str, str]) -> str:
    """Substitute ${VAR} placeholders; raise KeyError listing the missing ones."""
    tpl = string.Template(template)
    missing = sorted({name for name in tpl.get_identifiers() if name not in values})
    if missing:
        raise KeyError(", ".join(missing))
    return tpl.substitute(values)


def parse_sets(pairs: Sequence[str]) -> dict[str, str]:
    values: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects KEY=VALUE, got {pair!r}")
        values[key] = value
    return values


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("template", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    try:
        template = args.template.read_text()
        values = {**template_defaults(template), **os.environ, **parse_sets(args.set)}
        text = render(template, values)
    except KeyError as exc:
        print(f"render.py: {args.template}: no value for {exc.args[0]}", file=sys.stderr)
        return 2
    except (ValueError, OSError) as exc:
        print(f"render.py: {exc}", file=sys.stderr)
        return 2
    if str(args.out) == "-":
        sys.stdout.write(text)
        return 0
    secretfile.write(args.out, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
