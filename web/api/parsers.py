"""The API's JSON parser: DRF's, refusing strings no database column can hold (a NUL, a lone
surrogate) anywhere in the document, keys included, with a 400 that says where. DRF's
CharField refuses them too, but not every field is one (a group named in `groups` is looked
up as it was sent)."""

from __future__ import annotations

from typing import Any

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

from web.badinput import unstorable


class StorableJSONParser(JSONParser):
    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        data = super().parse(stream, media_type, parser_context)
        found = first_unstorable(data, "body")
        if found:
            raise ParseError(f"JSON parse error - {found[0]} {found[1]}.")
        return data


def first_unstorable(value: Any, where: str) -> tuple[str, str] | None:
    if isinstance(value, str):
        problem = unstorable(value)
        return (where, problem) if problem else None
    if isinstance(value, dict):
        for key, item in value.items():
            found = first_unstorable(key, f"{where}: a key") or first_unstorable(
                item, f"{where}.{key[:50]}"
            )
            if found:
                return found
    if isinstance(value, list):
        for index, item in enumerate(value):
            found = first_unstorable(item, f"{where}[{index}]")
            if found:
                return found
    return None
