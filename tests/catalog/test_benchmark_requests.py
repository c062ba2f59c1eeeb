import pytest

from catalog.benchmark_requests import BenchmarkRequests, InvalidTransition


def test_lifecycle_and_durability(tmp_path):
    store = BenchmarkRequests(tmp_path)
    a = store.create("org/model-a", {"quantization": ["int8"]}, requested_by="key1")
    b = store.create("/models/local")
    assert a.status == "pending" and a.matrix_overrides == {"quantization": ["int8"]}
    assert [r.id for r in store.list(status="pending")] == [a.id, b.id]
    store.set_status(a.id, "accepted", details={"deployments": ["d1", "d2"]})
    store.set_status(a.id, "running")
    done = store.set_status(a.id, "done", details={"runs": 2})
    assert done.status == "done" and done.details == {"deployments": ["d1", "d2"], "runs": 2}
    rejected = store.set_status(b.id, "rejected", reason="local path /models/local does not exist")
    assert rejected.reason.startswith("local path")
    reopened = BenchmarkRequests(tmp_path / "benchmark_requests.sqlite")  # a new process would see this
    assert reopened.get(a.id).status == "done" and reopened.get(b.id).status == "rejected"
    assert reopened.list(status="pending") == [] and len(reopened.list()) == 2
    assert reopened.get("br-missing") is None


def test_invalid_moves_are_refused(tmp_path):
    store = BenchmarkRequests(tmp_path)
    r = store.create("m")
    with pytest.raises(InvalidTransition, match="cannot go from pending to done"):
        store.set_status(r.id, "done")
    with pytest.raises(ValueError, match="needs a reason"):
        store.set_status(r.id, "rejected")
    with pytest.raises(ValueError, match="not one of"):
        store.set_status(r.id, "paused")
    with pytest.raises(KeyError):
        store.set_status("br-nope", "accepted")
    with pytest.raises(ValueError, match="non-empty"):
        store.create("  ")
    store.set_status(r.id, "accepted")
    failed = store.set_status(r.id, "failed", reason="matrix expansion failed")
    with pytest.raises(InvalidTransition, match="none \\(final\\)"):
        store.set_status(failed.id, "running")
