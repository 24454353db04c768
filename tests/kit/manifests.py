"""Manifest folders as tests read them: the agent's files by the product's own naming, and foreign files.

The naming is agent.reconciling's (manifest_file_name, parse_manifest_file_name), never a copy.
"""

from __future__ import annotations

from pathlib import Path

from agent.reconciling import manifest_file_name, parse_manifest_file_name

__all__ = ["FOREIGN", "expected_files", "foreign_files", "managed_files", "manifest_file_name",
           "parse_manifest_file_name", "put_foreign"]

FOREIGN = {"kube-apiserver.yaml": b"apiVersion: v1\nkind: Pod\n", "nginx.json": b'{"kind":"Pod"}',
           ".hidden": b"x", "k8s-edge-notours.json": b"{}"}


def managed_files(folder: Path) -> dict[str, bytes]:
    """The agent's files in a manifest folder (by its naming scheme)."""
    return {p.name: p.read_bytes() for p in folder.iterdir() if parse_manifest_file_name(p.name)}


def expected_files(pods: dict[tuple[str, str], bytes]) -> dict[str, bytes]:
    """What managed_files should be for these desired pods."""
    return {manifest_file_name(ns, n): m for (ns, n), m in pods.items()}


def put_foreign(folder: Path) -> dict[str, bytes]:
    """Files an operator put in the manifest folder; the agent must never touch them."""
    for n, data in FOREIGN.items():
        (folder / n).write_bytes(data)
    return dict(FOREIGN)


def foreign_files(folder: Path) -> dict[str, bytes]:
    """The foreign files as they are now."""
    return {n: (folder / n).read_bytes() for n in FOREIGN if (folder / n).exists()}
