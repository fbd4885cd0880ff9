"""Bad networks (issue 4), full matrix: 20 transfers of 8 MiB to 3 peers under each link.

`make vm-test-long` (marker `long`).  Same links and checks as test_badnet.py's fast version.
"""

from __future__ import annotations

import pytest

from p2pkpvm.cluster.cluster import ClusterView
from p2pkpvm.net.impair import impair
from p2pkpvm.scenario.badnet import LINKS, netem_drops, run_link_matrix, transfer_rounds
from p2pkpvm.scenario.scenario import MiB, Scenario

ROUNDS = 20
SIZE = 8 * MiB


@pytest.mark.long
@pytest.mark.timeout_s(7200)
@pytest.mark.parametrize("link", list(LINKS))
def test_badnet_long_multipeer(scn: Scenario, cluster: ClusterView, link: str) -> None:
    """20 x 8 MiB to vm2, vm3, vm4 over each link of issue 4's matrix: bit-exact everywhere."""
    run_link_matrix(scn, cluster, link, ROUNDS, SIZE)


@pytest.mark.long
@pytest.mark.timeout_s(3600)
def test_badnet_long_ipv6_multipeer_loss5(scn: Scenario, cluster: ClusterView) -> None:
    """IPv6, 20 x 8 MiB to three peers at 5% loss."""
    run_link_matrix(scn, cluster, "loss5", ROUNDS, SIZE, ipv6=True)


@pytest.mark.long
@pytest.mark.timeout_s(3600)
def test_badnet_long_ipv6_single_loss5(scn: Scenario, cluster: ClusterView) -> None:
    """IPv6 one peer (vm1 -> vm2), 20 x 8 MiB with 5% loss on vm2's link: bit-exact."""
    tx, rx = cluster["vm1"], cluster["vm2"]
    with impair(rx, loss_pct=5):
        report = transfer_rounds(scn, tx, [rx], ROUNDS, SIZE, ipv6=True)
        drops = netem_drops(rx)
    print(f"\nipv6 single loss5: {report.summary(SIZE, 1)}; netem drops {drops}")
    assert drops > 0, "netem dropped nothing on vm2"
