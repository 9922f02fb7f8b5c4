"""Test harness for the end-to-end tests: real Slurm clusters (one node, or two nodes in two
network namespaces), an MLflow tracking server and headless Chromium, each started by PID and
torn down by PID."""
