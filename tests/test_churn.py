"""Zero loss under endpoint churn (issue 11), through a live `fastmesh run`
and real origin processes: endpoints of an `eds` file cluster and of a
`strict_dns` cluster added and removed while tagged requests run; every
request answered once, by one origin, none by an origin removed before it
started (make-before-break). perf/churn.py does 100 changes per source."""
from __future__ import annotations

import pytest

from support.churn import ChurnRig

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("args", [("--single-process",), ("--workers", "2")],
                         ids=["single", "workers"])
def test_no_request_lost_or_duplicated_while_endpoints_churn(tmp_path, args):
    rig = ChurnRig(tmp_path, origins=4, args=args).start()
    try:
        of, od = rig.run(changes=15, interval=0.15)
        for outcomes in (of, od):
            v = rig.verdict(outcomes)
            assert v.requests > 100
            assert not v.failed, [(o.id, o.status, o.error) for o in v.failed[:5]]
            assert not v.duplicated, v.duplicated[:5]
            assert not v.unserved, v.unserved[:5]
            assert not v.late, v.late[:5]
        # the churn reached traffic: added endpoints got requests
        assert rig.verdict(of).to_new_ms and rig.verdict(od).to_new_ms
        # and every origin served some (the sets moved over all of them)
        assert all(o.records() for o in rig.origins)
    finally:
        rig.stop()
