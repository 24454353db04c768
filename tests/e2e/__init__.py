"""End-to-end fault-injection suite: real processes, Toxiproxy, and the convergence checker."""
