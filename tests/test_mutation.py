"""The mutation runner: what it changes, what it leaves alone, and a sample run per test run.

The full run (`tools/run mutate`) takes too long for every test run; here a small,
deterministic sample of each safety-core module's mutants must be killed, so a change
that leaves a safety limit untested fails CI even between full runs.
"""

from __future__ import annotations

import ast
import hashlib
import subprocess
import sys

import pytest

from hashbay.tools.mutation.__main__ import EQUIVALENTS, ROOT, TARGETS
from hashbay.tools.mutation.mutants import mutants_of
from hashbay.tools.mutation.runner import load_equivalents, load_targets

SAMPLE = """\
'''Docstring 1 < 2.'''
LIMIT: int = 3


def check(value: float, low: float = 0.5) -> float:
    '''Why: never past the limit.'''
    if not low <= value < LIMIT and value != 7:
        raise ValueError(f"{value} outside {low + 1}")
    total = min(value * 2, LIMIT) - 1
    total += 1
    if total is None or total in (1, 2):
        return -total
    log.warning("clamped", value=value)
    return total
"""


def mutations_of(source: str) -> list[tuple[int, str]]:
    return [(m.line, m.mutation) for m in mutants_of("sample.py", source.encode())]


def test_each_kind_of_small_change_is_made_once_per_place() -> None:
    assert mutations_of(SAMPLE) == [
        (2, "`3` → `4`"),
        (5, "`0.5` → `1.5`"),
        (7, "`not` removed"),
        (7, "`<=` → `<`"),
        (7, "`<=` → `>`"),
        (7, "`<` → `<=`"),
        (7, "`<` → `>=`"),
        (7, "`and` → `or`"),
        (7, "`!=` → `==`"),
        (7, "`7` → `8`"),
        (8, "raise removed"),
        (9, "`min` → `max`"),
        (9, "`*` → `/`"),
        (9, "`2` → `3`"),
        (9, "`-` → `+`"),
        (9, "`1` → `2`"),
        (10, "update removed"),
        (10, "`1` → `2`"),
        (11, "`is` → `is not`"),
        (11, "`or` → `and`"),
        (11, "`in` → `not in`"),
        (11, "`1` → `2`"),
        (11, "`2` → `3`"),
        (12, "return removed"),  # an early return; the last one only returns None
        (12, "`-` removed"),
    ]


def test_messages_docstrings_annotations_and_logging_are_left_alone() -> None:
    touched = {line for line, _ in mutations_of(SAMPLE)}
    assert 1 not in touched and 6 not in touched  # docstrings
    assert 13 not in touched  # a logging call
    assert [m for line, m in mutations_of(SAMPLE) if line == 8] == ["raise removed"]  # f-string


def test_a_mutant_changes_only_its_own_bytes() -> None:
    source = SAMPLE.encode()
    for mutant in mutants_of("sample.py", source):
        mutated = mutant.apply(source)
        ast.parse(mutated)
        (start, end, text), *_ = mutant.edits
        assert mutated[:start] == source[:start]
        assert mutated[start + len(text) :] == source[end:] or len(mutant.edits) > 1


def test_positions_count_characters_not_bytes_after_non_ascii_text() -> None:
    source = 'x = "°C →"; y = 1 < 2\n'.encode()
    (first, *_) = mutants_of("sample.py", source)
    assert (first.column, first.mutation) == (17, "`1` → `2`")
    assert first.apply(source) == 'x = "°C →"; y = 2 < 2\n'.encode()


def test_dict_entries_are_left_out_one_at_a_time() -> None:
    source = b"TABLE = {\n    'a': 1,\n    'b': 2,\n    **OTHER,\n}\n"
    removed = [m for m in mutants_of("t.py", source) if "entry" in m.mutation]
    assert [m.mutation for m in removed] == [
        "entry `'a'` removed",
        "entry `'b'` removed",
        "entry `**OTHER` removed",
    ]
    namespace: dict[str, object] = {"OTHER": {"c": 3}}
    exec(removed[2].apply(source), namespace)  # noqa: S102 - our own test source
    assert namespace["TABLE"] == {"a": 1, "b": 2}


def test_every_safety_core_mutant_is_valid_python_and_named_once() -> None:
    for target in load_targets(TARGETS):
        source = (ROOT / target.module).read_bytes()
        mutants = mutants_of(target.module, source)
        assert len(mutants) >= 10, target.module
        assert len({m.key for m in mutants}) == len(mutants), target.module
        for mutant in mutants:
            compile(mutant.apply(source), target.module, "exec")


def test_every_accepted_equivalent_mutant_still_exists_and_says_why() -> None:
    targets = {t.module for t in load_targets(TARGETS)}
    existing = {
        m.key for module in targets for m in mutants_of(module, (ROOT / module).read_bytes())
    }
    equivalents = load_equivalents(EQUIVALENTS)
    assert len({e.key for e in equivalents}) == len(equivalents), "an entry is listed twice"
    for equivalent in equivalents:
        assert equivalent.module in targets
        assert equivalent.key in existing, f"stale entry in equivalent.toml: {equivalent}"
        assert len(equivalent.reason) > 20


def test_the_test_map_names_existing_test_files() -> None:
    for target in load_targets(TARGETS):
        assert (ROOT / target.module).is_file()
        for test in target.tests:
            assert (ROOT / test).is_file(), test


def digest_of_tree() -> str:
    digest = hashlib.sha256()
    for folder in ("agent", "drivers"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            digest.update(path.read_bytes())
    return digest.hexdigest()


@pytest.mark.slow
def test_a_sample_of_every_safety_core_modules_mutants_is_killed() -> None:
    before = digest_of_tree()
    run = subprocess.run(
        [sys.executable, "-m", "hashbay.tools.mutation", "--sample", "5", "--strict"],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    for target in load_targets(TARGETS):
        assert target.module in run.stdout
    assert digest_of_tree() == before, "the working tree was left mutated"
