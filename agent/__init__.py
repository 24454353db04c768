"""edge-agent: keeps one edge node's kubelet static pods equal to its slice of the manager's event log.

Modules: `main` (the `edge-agent` CLI and start-up order), `settings` (flags), `sync_client`
and `backoff` (the gRPC sync protocol), `reconciling` (the manifest folder), `serving`
(/metrics, /healthz, /readyz), `faults` (test-only fault injection). The replica itself is
`eventlog.ReplicaStore`. Never imports `manager`.
"""
