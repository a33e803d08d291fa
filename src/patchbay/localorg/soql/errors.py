"""The error a refused query raises, worded as Salesforce words it."""


class SoqlError(Exception):
    """A query Salesforce would refuse with HTTP 400; `code` is its errorCode.

    MALFORMED_QUERY (syntax), INVALID_FIELD (unknown field or relationship, wrong value type),
    INVALID_TYPE (unknown object), NUMBER_OUTSIDE_VALID_RANGE (OFFSET over 2000),
    INVALID_QUERY_FILTER_OPERATOR (a malformed id in a filter on an id field).
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def error_at(code: str, text: str, pos: int, reason: str) -> SoqlError:
    """An error worded as Salesforce words it: the query line, a caret, the position, the reason."""
    line_start = text.rfind("\n", 0, pos) + 1
    line_end = text.find("\n", pos)
    line = text[line_start:line_end if line_end >= 0 else len(text)]
    before = text[line_start:pos]
    # Keep tabs in the caret line so the caret sits under the right character.
    caret = "".join("\t" if ch == "\t" else " " for ch in before) + "^"
    row = text.count("\n", 0, pos) + 1
    column = pos - line_start + 1
    return SoqlError(code, f"{line}\n{caret}\nERROR at Row:{row}:Column:{column}\n{reason}")
