"""The suite relies on `--dist loadgroup`: tests marked xdist_group("name") share one worker and its module
fixtures (the fleet builds once, not once per worker). pytest 9.2 silently broke that grouping with
pytest-xdist 3.8 (pytest-dev/pytest-xdist#1386), which cost CI a second fleet build; constraints.txt pins
pytest 9.1.1. This test fails when a pin change breaks the grouping again."""

import os

import pytest


@pytest.mark.xdist_group("grouping-check")
def test_a_grouped_test_carries_its_group_under_loadgroup(request):
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        pytest.skip("not running under pytest-xdist (-n): there is no grouping to check")
    if not getattr(request.config.option, "loadgroup", False):  # what xdist sets on a worker for loadgroup
        pytest.skip("not running with --dist loadgroup")
    assert request.node.nodeid.endswith("@grouping-check"), (
        f"xdist_group is ignored ({request.node.nodeid!r} has no @group suffix): pin a pytest that "
        "pytest-xdist groups with (see constraints.txt)")
