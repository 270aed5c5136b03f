"""A small all-pairs generator: every pair of levels of every two factors appears in at least one cell.

The combination test runs these cells instead of the full product (thousands of runs), which finds the
faults that two pieces cause together at a fraction of the cost. Greedy and deterministic: each new cell
is the candidate covering most uncovered pairs, candidates built factor by factor from the first uncovered
pair; ties go to the earlier level, so the list never changes between runs.
"""
from __future__ import annotations

from itertools import combinations, product
from typing import Callable, Mapping, Sequence

Cell = dict[str, str]


def uncovered_pairs(factors: Mapping[str, Sequence[str]], cells: Sequence[Cell],
                    allowed: Callable[[Cell], bool] = lambda cell: True) -> set[tuple]:
    """The ((factor, level), (factor, level)) pairs no cell holds, among pairs some allowed cell could hold."""
    held = {((a, cell[a]), (b, cell[b])) for cell in cells for a, b in combinations(factors, 2)}
    wanted = set()
    for a, b in combinations(factors, 2):
        for x, y in product(factors[a], factors[b]):
            if allowed({a: x, b: y}):
                wanted.add(((a, x), (b, y)))
    return wanted - held


def all_pairs(factors: Mapping[str, Sequence[str]], allowed: Callable[[Cell], bool] = lambda cell: True
              ) -> list[Cell]:
    """Cells covering every allowed pair of levels; ``allowed`` sees partial cells and rejects impossible ones.

    ``allowed`` must accept a partial cell whenever some completion of it is allowed (it is asked about
    pairs and growing prefixes), e.g. by only judging the factors the partial cell names.
    """
    names = list(factors)
    todo = uncovered_pairs(factors, [], allowed)
    cells: list[Cell] = []
    while todo:
        (a, x), (b, y) = min(todo, key=lambda pair: (names.index(pair[0][0]), names.index(pair[1][0]),
                                                      factors[pair[0][0]].index(pair[0][1]),
                                                      factors[pair[1][0]].index(pair[1][1])))
        cell: Cell = {a: x, b: y}
        for name in names:
            if name in cell:
                continue
            options = [level for level in factors[name] if allowed({**cell, name: level})]
            if not options:
                raise ValueError(f"no level of {name!r} fits {cell}")
            cell[name] = max(options, key=lambda level: (_gain({**cell, name: level}, todo),
                                                         -factors[name].index(level)))
        cell = {name: cell[name] for name in names}
        cells.append(cell)
        todo -= {((p, cell[p]), (q, cell[q])) for p, q in combinations(names, 2)}
    return cells


def _gain(partial: Cell, todo: set[tuple]) -> int:
    """How many still-uncovered pairs a partial cell already holds."""
    return sum(1 for (p, x), (q, y) in todo if partial.get(p) == x and partial.get(q) == y)
