"""Targets: the servers a deployment is measured against (started here, reached over HTTP, or
rented on RunPod). Framework-free: the Dagster layer wraps them in a thin resource."""
