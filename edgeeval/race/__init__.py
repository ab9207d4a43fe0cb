"""Racing: evaluate variants on a shared, seeded order of items, in rounds, and stop the
accuracy work of a variant once its place is settled (issue 21).

- `rules`: the pure decision logic (item order, round sizes, the paired test, one look);
- `replay`: the race replayed over stored per-item verdicts (a simulation on real verdicts);
- `verdicts`: per-item right/wrong tables built from a stored run's records and samples.
No module here loads a model; `rules` and `replay` import only the leaves.
"""
