"""The model families: each a folder that fills in one contract (:mod:`engine.families.contract`)."""
