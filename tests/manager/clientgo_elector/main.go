// client-go's own LeaderElector (tools/leaderelection, a LeaseLock), for the differential test of
// manager/leader_election.py (tests/manager/test_leader_election_against_client_go.py).
//
// Flags name the Lease, the identity and the three timings. Output, one line per callback:
// "started <unix seconds>", "stopped <unix seconds>", "leader <identity>". SIGTERM cancels its
// context (ReleaseOnCancel: the holder is cleared); it exits once it stops leading, as
// kube-controller-manager does.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	coordinationv1 "k8s.io/client-go/kubernetes/typed/coordination/v1"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

func main() {
	kubeconfig := flag.String("kubeconfig", "", "kubeconfig file")
	namespace := flag.String("namespace", "default", "Lease namespace")
	name := flag.String("name", "edge-manager", "Lease name")
	identity := flag.String("identity", "", "holder identity")
	lease := flag.Duration("lease-duration", 15*time.Second, "")
	renew := flag.Duration("renew-deadline", 10*time.Second, "")
	retry := flag.Duration("retry-period", 2*time.Second, "")
	flag.Parse()

	cfg, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		fmt.Fprintln(os.Stderr, "kubeconfig:", err)
		os.Exit(2)
	}
	cfg.Timeout = *renew // as kube-scheduler bounds its leader-election client
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Namespace: *namespace, Name: *name},
		Client:     coordinationv1.NewForConfigOrDie(cfg),
		LockConfig: resourcelock.ResourceLockConfig{Identity: *identity},
	}
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer cancel()
	var mu sync.Mutex
	say := func(format string, a ...any) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Printf(format+"\n", a...)
	}
	now := func() float64 { return float64(time.Now().UnixNano()) / 1e9 }
	leaderelection.RunOrDie(ctx, leaderelection.LeaderElectionConfig{
		Lock:            lock,
		LeaseDuration:   *lease,
		RenewDeadline:   *renew,
		RetryPeriod:     *retry,
		ReleaseOnCancel: true,
		Name:            *name,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(context.Context) { say("started %.6f", now()) },
			OnStoppedLeading: func() { say("stopped %.6f", now()) },
			OnNewLeader:      func(id string) { say("leader %s", id) },
		},
	})
}
