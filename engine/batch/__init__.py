"""Bulk jobs: scoring a customer file (:mod:`engine.batch.score`) and scanning logs and tables for threats
(:mod:`engine.batch.scan`), both resumable, every bad row counted."""
