"""WordNet as the general-text triplets read it (lcoemb.synthetic.thesaurus): the Debian
``wordnet-base`` database that CI installs, a missing folder and a broken line."""

from __future__ import annotations

import shutil

import pytest

from lcoemb.synthetic import thesaurus


def test_synsets_carry_lemmas_definitions_parents_and_tag_counts():
    wn = thesaurus.load_wordnet()
    assert len(wn.synsets) == 117659  # WordNet 3.0
    triangle = wn.synsets[wn.senses["triangle"][0]]
    assert triangle.pos == "n" and triangle.lemmas[0] == "triangle"
    assert triangle.definition == "a three-sided polygon"
    polygon = wn.synsets[triangle.parents[0]]
    assert "polygon" in polygon.lemmas
    assert "hexagon" in {wn.synsets[key].lemmas[0] for key in wn.siblings(triangle.key)}
    assert triangle.key not in wn.siblings(triangle.key)
    # examples and domain labels are not part of a definition
    stress = [wn.synsets[k] for k in wn.senses["stress"] if "strain" in wn.synsets[k].definition]
    assert stress and not stress[0].definition.startswith("(")
    assert all('"' not in wn.synsets[k].definition for k in wn.senses["conversion"])


def test_main_sense_synonyms_and_siblings():
    dog = thesaurus.main_sense("dog")
    assert dog is not None and dog.pos == "n" and "domestic dog" in dog.lemmas
    assert "rapidly" in thesaurus.synonyms("quickly")
    assert "quickly" not in thesaurus.synonyms("quickly")
    siblings = thesaurus.sibling_words("triangle")
    assert "hexagon" in siblings and "triangle" not in siblings
    assert "trigon" not in siblings  # a synonym is not a different concept
    # "run": no sense is most of its tagged uses, so a sentence's "run" is not replaced
    assert thesaurus.main_sense("run") is None
    assert thesaurus.synonyms("run") == () and thesaurus.sibling_words("run") == ()
    assert thesaurus.synonyms("qwxzv") == ()


def test_definition_entries_pair_a_word_with_its_definition_and_a_siblings():
    concepts = thesaurus.defined_concepts()
    assert len(concepts) > 15000 and list(concepts) == sorted(concepts)
    word, definition, other_word, other_definition = thesaurus.definition_entry(concepts[0], 7)
    assert word and definition and other_word and other_definition
    assert word != other_word and definition != other_definition


def test_a_missing_database_names_the_folder_and_the_package(tmp_path, monkeypatch):
    monkeypatch.setenv("LCOEMB_WORDNET", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="wordnet-base") as err:
        thesaurus.load_wordnet()
    assert str(tmp_path) in str(err.value) and "data.noun" in str(err.value)


def test_a_broken_line_names_its_file_and_line(tmp_path):
    for path in thesaurus.WORDNET_DIR.glob("[di][an][td]*.*"):  # data.* and index.*
        shutil.copy(path, tmp_path / path.name)
    verb = tmp_path / "data.verb"
    lines = verb.read_text(encoding="utf-8").splitlines()
    first = next(i for i, line in enumerate(lines) if not line.startswith("  "))
    lines[first] = "00001740 29 v zz breathe 0"
    verb.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=rf"data\.verb:{first + 1}: not a WordNet data line"):
        thesaurus.load_wordnet(tmp_path)
