"""Fill the Chinese catalogue from JSON files of {"English msgid": "中文"} (only empty or fuzzy entries).

    python scripts/fill_translations.py translations.json [more.json ...]

Run after `make i18n-update`; prints the msgids still untranslated. Existing translations are kept.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from babel.messages.pofile import read_po, write_po

CATALOG = Path(__file__).resolve().parent.parent / "app/translations/zh_Hans_CN/LC_MESSAGES/messages.po"


def main(paths: list[str]) -> int:
    table: dict[str, str] = {}
    for path in paths:
        table.update(json.loads(Path(path).read_text(encoding="utf-8")))
    with CATALOG.open("rb") as fh:
        catalog = read_po(fh)
    missing = []
    for message in catalog:
        if not message.id or (message.string and "fuzzy" not in message.flags):
            continue
        if message.id in table:
            message.string = table[message.id]
            message.flags.discard("fuzzy")
        else:
            missing.append(message.id)
    with CATALOG.open("wb") as fh:
        write_po(fh, catalog, sort_output=True, width=100)
    for msgid in missing:
        print(f"untranslated: {msgid!r}")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
