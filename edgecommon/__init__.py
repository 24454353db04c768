"""Small pieces both daemons share (manager and agent never import each other); no Kubernetes, no gRPC."""
