"""The README's demo: the whole flow on a local control plane, narrated.

Starts etcd + kube-apiserver (tools.controlplane) and a hollow kubelet for node
edge01 (kubemark: real kubelet code with a fake container runtime), installs the
CRD, makes a CA in a Secret and a bootstrap token as the README does (openssl, kubectl),
runs edge-manager with joining on and one edge-agent that joins with the token (its
certificate through a CertificateSigningRequest) and writes manifests into that kubelet's
static-pod folder, creates example/edge01.yaml, then shows what an operator sees:
`kubectl get edgenodes` turning Running, the mirror pod in `kubectl get pods`,
`kubectl describe edgenode`, the manifest folder and the event log. It then cuts
the manager off (the pod keeps running), changes the EdgeNode meanwhile, and shows
the agent catching up when the manager is back. Everything stops at the end
unless --keep is given.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from tools.controlplane import REPO, ControlPlane, free_port, wait_established

VENV_BIN = Path(sys.executable).parent
NODE = "edge01"


def say(text: str) -> None:
    """A narrated step, set apart from command output."""
    print(f"\n\033[1m==> {text}\033[0m", flush=True)


def show(cmd: list[str], *, env: dict[str, str], cwd: Path | None = None, check: bool = False) -> str:
    """Run a command as a user would and echo it with its output; with check, a failure stops the demo."""
    printable = shlex.join([Path(cmd[0]).name, *cmd[1:]])
    print(f"$ {printable}", flush=True)
    out = subprocess.run(cmd, env=env, text=True, capture_output=True, cwd=cwd)
    print((out.stdout + out.stderr).rstrip(), flush=True)
    if check and out.returncode != 0:
        raise SystemExit(f"demo: {printable} failed with exit status {out.returncode}")
    return out.stdout


def make_join_secrets(pki: Path, *, kubectl: str, env: dict[str, str]) -> tuple[str, str]:
    """README "Joining agents" steps 1 and 3: the CA Secret and a bootstrap token; (CA hash, token)."""
    pki.mkdir(parents=True, exist_ok=True)
    show(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "30",
          "-keyout", "ca.key", "-out", "ca.crt", "-subj", "/CN=k8s-edge agent CA",
          "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
         env=env, cwd=pki, check=True)
    show(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
          "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=edge-manager"], env=env, cwd=pki, check=True)
    (pki / "server.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
    show(["openssl", "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
          "-days", "30", "-extfile", "server.ext", "-out", "server.crt"], env=env, cwd=pki, check=True)
    subprocess.run([kubectl, "create", "namespace", "k8s-edge"], env=env, capture_output=True)  # may exist (--keep)
    subprocess.run([kubectl, "delete", "secret", "edge-agent-ca", "-n", "k8s-edge", "--ignore-not-found"], env=env,
                   capture_output=True)
    show([kubectl, "create", "secret", "tls", "edge-agent-ca", "-n", "k8s-edge", "--cert=ca.crt", "--key=ca.key"],
         env=env, cwd=pki, check=True)
    digest = show(["sh", "-c", "openssl x509 -pubkey -in ca.crt | openssl pkey -pubin -outform der | sha256sum"],
                  env=env, cwd=pki, check=True)
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    token_id, token_secret = ("".join(secrets.choice(alphabet) for _ in range(n)) for n in (6, 16))
    expiration = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 24 * 3600))
    show([kubectl, "create", "secret", "generic", f"bootstrap-token-{token_id}", "-n", "kube-system",
          "--type", "bootstrap.kubernetes.io/token", f"--from-literal=token-id={token_id}",
          f"--from-literal=token-secret={token_secret}", f"--from-literal=expiration={expiration}",
          "--from-literal=usage-bootstrap-authentication=true", f"--from-literal=description={NODE} join"], env=env, check=True)
    show([kubectl, "annotate", "secret", f"bootstrap-token-{token_id}", "-n", "kube-system",
          f"edge.k8s.io/node={NODE}"], env=env, check=True)
    return "sha256:" + digest.split()[0], f"{token_id}.{token_secret}"


def wait_for(what: str, ok, *, timeout: float = 60.0) -> None:
    """Wait on a condition with a deadline, or stop the demo with a clear line."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ok():
            return
        time.sleep(0.2)
    raise SystemExit(f"demo: gave up waiting for {what} after {timeout:.0f}s")


class Daemon:
    """A manager or agent process with its log in the demo folder."""

    def __init__(self, name: str, cmd: list[str], *, log: Path, env: dict[str, str]) -> None:
        self.name, self.cmd, self.log, self.env = name, cmd, log, env
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start it in its own process group, appending to its log."""
        self.proc = subprocess.Popen(
            self.cmd, env=self.env, stdout=self.log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True
        )

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop it (SIGTERM: clean; SIGKILL: a crash) and wait."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def edgenode_status(cp: ControlPlane) -> dict:
    """The EdgeNode's status as the API has it."""
    out = cp.kubectl("get", "edgenode", NODE, "-o", "json", check=False)
    return json.loads(out.stdout).get("status", {}) if out.returncode == 0 else {}


def mirror_pods(cp: ControlPlane) -> dict[str, str]:
    """Mirror pod name -> phase on the demo's node, in the default namespace."""
    out = cp.kubectl("get", "pods", "-o", "json", check=False)
    if out.returncode != 0:
        return {}
    return {p["metadata"]["name"]: p.get("status", {}).get("phase", "") for p in json.loads(out.stdout)["items"]
            if p.get("spec", {}).get("nodeName") == NODE}


def main(argv: list[str] | None = None) -> int:
    """Run the demo."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", type=Path, default=REPO / ".demo", help="where state, manifests and logs go")
    ap.add_argument("--keep", action="store_true", help="leave everything running until Ctrl-C")
    args = ap.parse_args(argv)
    demo = args.dir.resolve()
    for sub in ("manager", NODE, "pki"):
        shutil.rmtree(demo / sub, ignore_errors=True)
    manifests = demo / NODE / "manifests"
    manifests.mkdir(parents=True)
    (demo / "logs").mkdir(parents=True, exist_ok=True)
    for log in ("manager.log", "agent.log"):  # this run's lines only (the demo prints some of them)
        (demo / "logs" / log).unlink(missing_ok=True)

    say("Building (cached) and starting a local control plane: etcd + kube-apiserver on 127.0.0.1")
    with ControlPlane(demo / "controlplane") as cp:
        env = {**os.environ, "KUBECONFIG": str(cp.kubeconfig), "PATH": f"{cp.bin_dir}:{VENV_BIN}:{os.environ['PATH']}"}
        kubectl = str(cp.kubectl_path)
        say(f"Start a hollow kubelet for node {NODE} (kubemark: kubelet code, fake container runtime), "
            f"static pods from {manifests}")
        kubelet = cp.start_hollow_kubelet(NODE, static_pod_dir=manifests)
        print(f"(log: {kubelet.log_path})")
        show([kubectl, "get", "nodes"], env=env)
        say("Extend the Kubernetes API with the EdgeNode CRD")
        show([kubectl, "apply", "-f", "crd/edgenode.yaml"], env=env)
        print("$ kubectl wait --for condition=established crd/edgenodes.edge.k8s.io", flush=True)
        wait_established(cp.kubectl)

        say("Make the CA that signs the manager's serving certificate and the agents' certificates (a Secret), "
            "and a bootstrap token for the node, as kubeadm token create does")
        pki = demo / "pki"
        ca_hash, token = make_join_secrets(pki, kubectl=kubectl, env=env)
        token_file = demo / NODE / "token"
        token_file.write_text(token + "\n")
        token_file.chmod(0o600)

        sync_port, join_port, metrics_port = free_port(), free_port(), free_port()
        manager = Daemon(
            "edge-manager",
            [str(VENV_BIN / "edge-manager"), "--kubeconfig", str(cp.kubeconfig),
             "--tls-cert-file", str(pki / "server.crt"), "--tls-private-key-file", str(pki / "server.key"),
             "--agent-ca-secret", "k8s-edge/edge-agent-ca", "--join-server", f"127.0.0.1:{join_port}",
             "--sync-server", f"127.0.0.1:{sync_port}", "--data-dir", str(demo / "manager"),
             "--metrics-addr", f"127.0.0.1:{metrics_port}"],
            log=demo / "logs" / "manager.log", env=env,
        )
        agent = Daemon(
            "edge-agent",
            [str(VENV_BIN / "edge-agent"), "--node-name", NODE, "--join-server", f"127.0.0.1:{join_port}",
             "--token-file", str(token_file), "--discovery-token-ca-cert-hash", ca_hash,
             "--sync-server", f"127.0.0.1:{sync_port}", "--pod-manifest-path", str(manifests),
             "--data-dir", str(demo / NODE / "data"), "--resync-interval", "2s"],
            log=demo / "logs" / "agent.log", env=env,
        )
        try:
            say(f"Run the manager beside the control plane, joining on (log: {manager.log})")
            manager.start()
            wait_for("the manager's join listener", lambda: "join server at" in manager.log.read_text())
            say(f"Run the agent for node {NODE}: it joins with the token (its key never leaves the node), "
                f"then writes static-pod manifests into {manifests}")
            print(f"$ {shlex.join(['edge-agent', *agent.cmd[1:]])}", flush=True)
            agent.start()
            wait_for("the agent's certificate", lambda: (demo / NODE / "data" / "pki" / "agent.pem").exists())
            print("\n".join(line for line in agent.log.read_text().splitlines()
                            if "join" in line or "certificate" in line), flush=True)
            show([kubectl, "get", "csr"], env=env)
            show(["ls", "-l", str(demo / NODE / "data" / "pki")], env=env)

            say("Create an EdgeNode, exactly the original example")
            show([kubectl, "create", "-f", "example/edge01.yaml"], env=env)
            wait_for("the manifest on the edge", lambda: any(manifests.glob("k8s-edge_*.json")))
            wait_for("the EdgeNode to turn Running", lambda: edgenode_status(cp).get("phase") == "Running")
            show([kubectl, "get", "edgenodes"], env=env)
            show([kubectl, "get", "pods"], env=env)
            show(["ls", "-l", str(manifests)], env=env)
            show(["edge-eventlog", "dump", "--format", "table", str(demo / "manager")], env=env)

            say("What an operator sees on the EdgeNode: status, conditions and Events")
            wait_for("the manager's Events", lambda: "AgentConnected" in cp.kubectl(
                "get", "events", "--field-selector", f"involvedObject.name={NODE}", check=False).stdout)
            show([kubectl, "describe", "edgenode", NODE], env=env)

            say("Partition: the manager goes away (SIGKILL); the edge keeps its pods")
            manager.stop(signal.SIGKILL)
            show(["ls", str(manifests)], env=env)
            show([kubectl, "get", "pods"], env=env)
            say("Meanwhile an operator adds a pod to the EdgeNode")
            patch = {"spec": {"pods": [
                {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "nginx"},
                 "spec": {"containers": [{"name": "nginx", "image": "nginx", "ports": [{"containerPort": 80}]}]}},
                {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "redis"},
                 "spec": {"containers": [{"name": "redis", "image": "redis"}]}},
            ]}}
            show([kubectl, "patch", "edgenode", NODE, "--type", "merge", "-p", json.dumps(patch)], env=env)
            say("The manager comes back: it relists, records the change, and the agent resumes from its offset")
            manager.start()
            wait_for("the new manifest on the edge", lambda: len(list(manifests.glob("k8s-edge_*.json"))) == 2)
            wait_for(
                "the EdgeNode to be in sync and Running again",
                lambda: (s := edgenode_status(cp)).get("phase") == "Running" and s.get("runningPods") == 2,
            )
            show([kubectl, "get", "edgenodes"], env=env)
            show([kubectl, "get", "pods"], env=env)
            show(["ls", str(manifests)], env=env)
            show(["edge-eventlog", "dump", "--format", "table", str(demo / NODE / "data")], env=env)

            say("Delete the EdgeNode: its pods leave the edge")
            show([kubectl, "delete", "-f", "example/edge01.yaml"], env=env)
            wait_for("the manifests to be removed", lambda: not any(manifests.glob("k8s-edge_*.json")))
            wait_for("kubelet to remove the mirror pods", lambda: not mirror_pods(cp))
            show(["ls", "-l", str(manifests)], env=env)
            show([kubectl, "get", "pods"], env=env)
            show(["edge-eventlog", "verify", str(demo / "manager")], env=env)

            if args.keep:
                say("Still running. In another shell:")
                print(f"  export KUBECONFIG={cp.kubeconfig} PATH={cp.bin_dir}:$PATH")
                print(f"  kubectl create -f example/edge01.yaml; ls {manifests}; kubectl get pods")
                print("Ctrl-C stops everything.")
                try:
                    signal.pause()
                except KeyboardInterrupt:
                    pass
            say("Done: stopping the agent, the manager, the kubelet and the control plane")
        finally:
            agent.stop()
            manager.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
