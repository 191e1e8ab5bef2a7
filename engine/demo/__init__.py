"""Synthetic data with a known signal, and ``make run``'s main job (:mod:`engine.demo.job`)."""
