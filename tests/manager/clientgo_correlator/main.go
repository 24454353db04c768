// client-go's own EventCorrelator (tools/record), driven by a script on stdin, for the
// differential test of manager/events.py (tests/manager/test_correlating_events.py).
//
// Input: one JSON object per line {"at": seconds, "object": name, "type": ..., "reason": ..., "note": ...}.
// Output: one line per input: "skip", or "create <count> <message>" / "patch <count> <message>",
// where each distinct Event gets a stable number in place of its generated name.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"
	testclock "k8s.io/utils/clock/testing"
)

type step struct {
	At     float64 `json:"at"`
	Object string  `json:"object"`
	Type   string  `json:"type"`
	Reason string  `json:"reason"`
	Note   string  `json:"note"`
}

func main() {
	start := time.Unix(1_800_000_000, 0)
	clock := testclock.NewFakeClock(start)
	c := record.NewEventCorrelatorWithOptions(record.CorrelatorOptions{Clock: clock})
	names := map[string]int{}
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 1<<20)
	out := bufio.NewWriter(os.Stdout)
	defer out.Flush()
	for in.Scan() {
		var s step
		if err := json.Unmarshal(in.Bytes(), &s); err != nil {
			panic(err)
		}
		clock.SetTime(start.Add(time.Duration(s.At * float64(time.Second))))
		now := metav1.NewTime(clock.Now())
		ev := &v1.Event{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s.%x", s.Object, now.UnixNano()), Namespace: "ns"},
			InvolvedObject: v1.ObjectReference{Kind: "EdgeNode", Namespace: "ns", Name: s.Object,
				UID: types.UID("uid-" + s.Object), APIVersion: "edge.k8s.io/v1alpha1"},
			Reason: s.Reason, Message: s.Note, Type: s.Type, Count: 1, FirstTimestamp: now, LastTimestamp: now,
			Source: v1.EventSource{Component: "edge.k8s.io/edge-manager"},
		}
		r, err := c.EventCorrelate(ev)
		if err != nil {
			panic(err)
		}
		if r.Skip {
			fmt.Fprintln(out, "skip")
			continue
		}
		verb := "create"
		if r.Patch != nil {
			verb = "patch"
		}
		if _, ok := names[r.Event.Name]; !ok {
			names[r.Event.Name] = len(names)
		}
		fmt.Fprintf(out, "%s %d %d %s\n", verb, names[r.Event.Name], r.Event.Count, r.Event.Message)
		c.UpdateState(r.Event) // as recordToSink does with the server's answer
	}
}
