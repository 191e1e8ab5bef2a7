"""Bulk scans: files or folders of tables and auth logs, scored in-process, through Triton or on Dask,
resumable from a checkpoint, alerts as ECS JSON lines or Parquet, and forwarded to a SIEM over syslog."""

from engine.batch.scan.backends import LocalSpec, ServerSpec
from engine.batch.scan.run import ScanSummary, scan
from engine.batch.scan.siem import SiemTarget

__all__ = ["LocalSpec", "ScanSummary", "ServerSpec", "SiemTarget", "scan"]
