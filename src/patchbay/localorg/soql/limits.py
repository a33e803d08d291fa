"""How much a SOQL statement may ask for: Salesforce's limits, and a few of our own where it has none."""

MAX_OFFSET = 2000
MAX_RELATIONSHIP_DEPTH = 5
MAX_SUBQUERIES = 20  # parent-to-child relationships in one query, as Salesforce allows
MAX_RELATIONSHIPS = 55  # child-to-parent relationships in one query
MAX_LENGTH = 100_000  # characters in a statement
# NOTs and parentheses around a condition. Ours (Salesforce documents none): the SQL a condition
# becomes nests deeper still, and SQLite's parser takes a few dozen levels at most.
MAX_NESTING = 10
