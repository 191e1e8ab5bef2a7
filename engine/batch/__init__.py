"""Bulk jobs: scoring a customer file (:mod:`engine.batch.score`), recommending products to one
(:mod:`engine.batch.recommend`, on the same machinery) and scanning logs and tables for threats
(:mod:`engine.batch.scan`, resumable); every bad row counted."""
