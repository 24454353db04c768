"""The test kit: every helper the suites share, in one place; test modules import only from here.

| module | what |
|---|---|
| `waits` | `wait_for` (threads), `wait_until` and `run` (asyncio), `http_get`, `wait_ready` (/readyz) |
| `processes` | `Daemon` (start, kill -9, restart, log), `free_port`, commands run to their exit, refused starts |
| `manager` | `ManagerProcess` (edge-manager, ready by /readyz), the manager's events read from outside |
| `agents` | `AgentProc` (edge-agent with its folders and metrics), replicas made on disk, journal kinds |
| `servers` | in-process sync servers (`serving`, `LogServer`) and the `RecordingObserver` |
| `standbys` | `FakeStandby`: a sync server that answers every Stream "not the leader", naming one |
| `follow_leaders` | `FakeLeader` (the Follow RPC alone over a LogStore, with faults), `Following` (a standby's Follower run for an `async with`), `LostHelloChannels` (the refusal race gRPC reports as INTERNAL) |
| `fake_agents` | `FakeAgent` (raw gRPC, thread), `RawStream` (protocol by hand), `legit_agent_syncs` (SyncClient) |
| `pki` | a test CA, server and client certificates (openssl) |
| `joining` | a join client, the agent CA and its Secret, bootstrap tokens, node CSRs |
| `builders` | pod manifests, log changes (one `put`, one `delete`), EdgeNodes, mirror pods, kubeconfigs |
| `manifests` | manifest folders by the agent's own naming; foreign files |
| `files` | file modes; an LMDB store opened raw; a manager log's stored records |
| `logs` | `captured_logs`: a block's loguru lines (level, message) |
| `crd`, `malformed`, `kubelet_shape` | the CRD file and its wait; malformed pods; kubelet's shape checks |
| `harness`, `checker`, `workload`, `toxiproxy` | the end-to-end system, its convergence checker, workload and fault proxies |
| `fixtures` | the shared pytest fixtures (loaded by tests/conftest.py) |
| `appender.py` | a writer process for the eventlog crash and reader tests |
"""
