"""Bulk scans: files or folders of tables and auth logs, scored in-process, through Triton or on Dask,
resumable from a checkpoint, alerts as ECS JSON lines or Parquet."""

from engine.batch.scan.backends import LocalSpec, ServerSpec
from engine.batch.scan.run import ScanSummary, scan

__all__ = ["LocalSpec", "ScanSummary", "ServerSpec", "scan"]
