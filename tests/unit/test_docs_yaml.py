"""Every YAML block of the README and of docs/*.md goes through the real loader.

A block is a whole integration file, validated as one, unless the line before it says
`<!-- yaml: fragment -->`: then it is part of a file (a system, an integration) and must
still be well-formed YAML with no key given twice. `${VARS}` get dummy values.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from patchbay import spec

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```yaml\n(.*?)^```", re.MULTILINE | re.DOTALL)
FRAGMENT = "<!-- yaml: fragment -->"
ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)")


def blocks() -> list[tuple[str, bool, str]]:
    """(where, is a fragment, text) of every ```yaml block."""
    found = []
    for document in DOCUMENTS:
        markdown = document.read_text(encoding="utf-8")
        for match in BLOCK.finditer(markdown):
            before = markdown[:match.start()].rstrip().rsplit("\n", 1)[-1].strip()
            line = markdown.count("\n", 0, match.start()) + 2
            # blank lines in front, so that the loader's line numbers are the document's
            found.append((f"{document.relative_to(ROOT)}:{line}", before == FRAGMENT,
                          "\n" * (line - 1) + match[1]))
    return found


def test_the_documents_have_yaml_blocks_of_both_kinds() -> None:
    kinds = {fragment for _, fragment, _ in blocks()}
    assert kinds == {True, False}


@pytest.mark.parametrize(("where", "fragment", "text"), blocks(), ids=[b[0] for b in blocks()])
def test_every_yaml_block_loads(where: str, fragment: bool, text: str) -> None:
    environ = {name: f"dummy-{name.lower()}" for name in ENV.findall(text)}
    if fragment:
        spec.parse_yaml(text, where)
    else:
        spec.loads(text, path=ROOT / where.split(":")[0], environ=environ)


def test_a_yaml_error_names_the_document_line() -> None:
    with pytest.raises(spec.SpecError, match=r"^README\.md:3:9: malformed YAML"):
        spec.parse_yaml("\n" * 2 + "a: {b: ${X}}\n", "README.md")
